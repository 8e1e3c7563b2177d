from __future__ import annotations

from service.auth.keys import (
    KEY_PREFIX,
    generate_api_key,
    hash_api_key,
    mask_api_key,
    redact_api_key,
)


def test_keys_are_random_prefixed_and_stored_as_hashes() -> None:
    first, second = generate_api_key(), generate_api_key()

    assert first.startswith(KEY_PREFIX) and len(first) > 50
    assert first != second
    assert hash_api_key(first) != hash_api_key(second)
    assert len(hash_api_key(first)) == 64 and first not in hash_api_key(first)


def test_mask_matches_openai_form() -> None:
    # OpenAI: "not-a-real-key-so-expect-error-unauthorized" -> first 8, stars, last 4.
    assert mask_api_key("not-a-real-key-so-expect-error-unauthorized") == (
        "not-a-re" + "*" * 31 + "ized"
    )
    assert mask_api_key("short") == "*****"


def test_redacted_form_hides_the_secret() -> None:
    key = "sk-openft-abcdefghijklmnopqrstuvwxyz"

    assert redact_api_key(key) == "sk-openft-ab...wxyz"
