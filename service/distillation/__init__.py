"""Distillation: stored chat completions and responses turned into a training file."""
