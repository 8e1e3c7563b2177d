"""OpenFT's training workers: claim queued fine-tuning jobs and train LoRA adapters."""
