"""Chat Completions and legacy Completions: OpenAI's request bodies, served through the gateway."""
