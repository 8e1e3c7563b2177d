"""API key material: generation, the stored hash, and the redacted forms shown to people."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-openft-"
ADMIN_KEY_PREFIX = "sk-openft-admin-"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def generate_admin_key() -> str:
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key. Keys carry 256 random bits, so a fast hash is safe to store."""
    return hashlib.sha256(key.encode()).hexdigest()


def redact_api_key(key: str) -> str:
    """The form listed by ``openft keys list``: ``sk-openft-Ab...wxyz``."""
    prefix = ADMIN_KEY_PREFIX if key.startswith(ADMIN_KEY_PREFIX) else KEY_PREFIX
    return f"{key[: len(prefix) + 2]}...{key[-4:]}"


def mask_api_key(key: str) -> str:
    """The form OpenAI echoes in ``invalid_api_key`` errors: first 8 and last 4 characters."""
    if len(key) <= 12:
        return "*" * len(key)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]
