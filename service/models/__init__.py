"""Models: the registry of fine-tunable base models and the ``/v1/models`` API."""
