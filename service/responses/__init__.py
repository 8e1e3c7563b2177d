"""The Responses API: OpenAI's ``/v1/responses``, served as chat completions through the gateway."""
