"""OpenFT's API service: OpenAI-compatible HTTP endpoints over a database and a blob store."""
