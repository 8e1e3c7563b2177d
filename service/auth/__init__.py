"""Projects and API keys: issuing, hashing, revoking and checking bearer keys."""
