"""Checkpoint permissions: an operator shares a fine-tuned model with other projects."""
