"""Webhook signing (verified by the openai SDK), the payload's shape and the retry schedule."""

from __future__ import annotations

import base64
import json
import random
import time

import openai
import pytest
from openai.types.webhooks import FineTuningJobSucceededWebhookEvent

from service.webhooks.outbox import EVENT_TYPES, event_payload
from service.webhooks.retry import JITTER, MAX_DELAY_S, backoff_seconds, retry_delay
from service.webhooks.signing import USER_AGENT, new_secret, signature, signed_headers

SDK = openai.OpenAI(api_key="not-used")


def signed(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return signed_headers(secret, "wh_0123", timestamp or int(time.time()), body)


def test_the_openai_sdk_accepts_our_signature_and_parses_the_event() -> None:
    secret = new_secret()
    body = event_payload("evt_abc", "fine_tuning.job.succeeded", 1719168000, "ftjob-xyz")

    event = SDK.webhooks.unwrap(body, signed(body, secret), secret=secret)

    assert isinstance(event, FineTuningJobSucceededWebhookEvent)
    assert (event.id, event.type, event.created_at, event.data.id) == (
        "evt_abc",
        "fine_tuning.job.succeeded",
        1719168000,
        "ftjob-xyz",
    )
    assert event.object == "event"


def test_a_tampered_body_a_wrong_secret_or_an_old_timestamp_is_rejected() -> None:
    secret = new_secret()
    body = event_payload("evt_abc", "fine_tuning.job.failed", 1719168000, "ftjob-xyz")
    headers = signed(body, secret)

    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body.replace("ftjob-xyz", "ftjob-abc"), headers, secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body, headers, secret=new_secret())
    stale = signed(body, secret, int(time.time()) - 3600)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body, stale, secret=secret)


def test_signature_is_standard_webhooks_v1() -> None:
    # The Standard Webhooks specification's own test vector.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_secrets_are_random_whsec_base64_and_headers_are_complete() -> None:
    first, second = new_secret(), new_secret()

    assert first != second and first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    headers = signed("{}", first, 1700000000)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("wh_0123", "1700000000")


def test_payload_is_openais_event_object() -> None:
    body = json.loads(event_payload("evt_1", "fine_tuning.job.cancelled", 5, "ftjob-1"))

    assert body == {
        "id": "evt_1",
        "object": "event",
        "type": "fine_tuning.job.cancelled",
        "created_at": 5,
        "data": {"id": "ftjob-1"},
    }
    assert EVENT_TYPES == (
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
        "batch.completed",
        "batch.failed",
        "batch.cancelled",
        "batch.expired",
    )
    secret = new_secret()
    for kind in EVENT_TYPES:  # each is an event type the SDK's unwrap knows
        payload = event_payload("evt_1", kind, int(time.time()), "x-1")
        typed = SDK.webhooks.unwrap(payload, signed(payload, secret), secret=secret)
        assert (typed.type, typed.data.id) == (kind, "x-1")


def test_backoff_grows_fourfold_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(7)
    for attempts, nominal in [(1, 5), (2, 20), (3, 80), (4, 320), (8, MAX_DELAY_S)]:
        delay = backoff_seconds(attempts, 5.0, rng)
        assert nominal * (1 - JITTER) <= delay <= nominal * (1 + JITTER)
    assert backoff_seconds(30, 5.0, rng) <= MAX_DELAY_S * (1 + JITTER)
    assert backoff_seconds(3, 0.0, rng) == 0


def test_deliveries_are_given_up_after_max_attempts_about_three_days_later() -> None:
    delays = [retry_delay(n, base_s=5.0, max_attempts=18) for n in range(1, 18)]
    nominal_total_h = sum(min(5.0 * 4 ** (n - 1), MAX_DELAY_S) for n in range(1, 18)) / 3600

    assert all(d is not None for d in delays)
    assert retry_delay(18, base_s=5.0, max_attempts=18) is None
    assert 60 < nominal_total_h < 72
