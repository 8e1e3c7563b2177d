"""OpenAI's graders as pure functions: no HTTP, no training."""
