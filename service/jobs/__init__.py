"""The Fine-tuning jobs API: create, list, retrieve, cancel jobs and list their events."""
