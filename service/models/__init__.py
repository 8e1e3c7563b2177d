"""Models: the `/v1/models` API (configured base models and each project's fine-tuned ones)
and moving adapters in and out."""
