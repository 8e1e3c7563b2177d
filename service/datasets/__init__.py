"""Fine-tuning data: OpenAI's training formats and the streaming validator of JSONL files."""
