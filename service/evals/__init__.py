"""Before/after evaluation of a fine-tuned model against its base on a held-out chat file."""
