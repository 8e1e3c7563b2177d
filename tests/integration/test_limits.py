"""The shared rate-limit window and the idempotency index under concurrency, on SQLite and
PostgreSQL: what several API processes doing the same thing at once must never get wrong."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from service.app import AppState
from service.auth.principal import Principal
from service.db.models import FineTuningJob, IdempotencyKey, RateLimitWindow
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
from service.limits import RateLimiter, RateLimitError


def _principal(state: AppState, **limits: int) -> Principal:
    issued = state.access.issue_key("limits")
    if limits:
        state.access.set_key_limits(
            issued.key_id,
            requests_per_minute=limits.get("rpm"),
            tokens_per_minute=limits.get("tpm"),
        )
    return state.access.authenticate(f"Bearer {issued.key}", None)


def _admitted(limiter: RateLimiter, principal: Principal, tokens: int = 0) -> bool:
    try:
        limiter.admit(principal, tokens=tokens)
    except RateLimitError:
        return False
    return True


def test_concurrent_requests_never_exceed_the_limit(state: AppState) -> None:
    principal = _principal(state, rpm=25)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _admitted(state.limiter, principal), range(60)))

    assert results.count(True) == 25
    with state.db.read() as session:
        assert session.scalar(select(func.sum(RateLimitWindow.requests))) == 25


class Clock:
    """Time the test moves by hand, from the start of some minute."""

    def __init__(self) -> None:
        self.now = 60.0 * 29_000_000

    def __call__(self) -> float:
        return self.now


def test_the_limit_holds_over_any_sixty_seconds(state: AppState) -> None:
    principal = _principal(state, rpm=4)
    clock = Clock()
    limiter = RateLimiter(state.db, state.settings, clock=clock)
    clock.now += 58.0
    assert [_admitted(limiter, principal) for _ in range(2)] == [True, True]
    clock.now += 1.5
    assert [_admitted(limiter, principal) for _ in range(3)] == [True, True, False]

    clock.now += 2.0  # into the next minute: the burst at the last one's end still counts
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(principal)

    # The first two leave the minute 60 s after their second (58): in 56.5 s.
    assert refused.value.headers["retry-after"] == "57"
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.headers["x-ratelimit-reset-requests"] == "58s"  # the last two's second
    assert "Used 4" in refused.value.message and "try again in 57s" in refused.value.message
    clock.now += 56.0
    assert not _admitted(limiter, principal)
    clock.now += 0.5
    headers = limiter.admit(principal)
    assert headers["x-ratelimit-remaining-requests"] == "1"  # 2 left the minute, 1 came in
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert [_admitted(limiter, principal) for _ in range(2)] == [True, False]
    clock.now += 1.0  # the last two of the burst are gone too
    assert [_admitted(limiter, principal) for _ in range(3)] == [True, True, False]


def test_tokens_estimate_then_actual(state: AppState) -> None:
    principal = _principal(state, tpm=1000)

    assert _admitted(state.limiter, principal, tokens=900)
    assert not _admitted(state.limiter, principal, tokens=200)
    state.limiter.charge(principal, -800)  # the answer used 100 tokens, not 900

    assert _admitted(state.limiter, principal, tokens=200)
    with state.db.read() as session:
        assert session.scalar(select(func.sum(RateLimitWindow.tokens))) == 300


def test_a_key_without_limits_writes_nothing(state: AppState) -> None:
    principal = _principal(state)

    for _ in range(5):
        assert state.limiter.admit(principal) == {}

    with state.db.read() as session:
        assert session.scalar(select(func.count()).select_from(RateLimitWindow)) == 0


def test_old_windows_are_swept(state: AppState) -> None:
    principal = _principal(state, rpm=5)
    state.limiter.admit(principal)
    with state.db.write() as session:
        session.add(RateLimitWindow(key_id="key_old", window_start=60, requests=1, tokens=0))

    assert state.limiter.sweep() == 1

    with state.db.read() as session:
        assert session.scalars(select(RateLimitWindow.key_id)).all() == [principal.key_id]


def _training_file(state: AppState, principal: Principal) -> str:
    blob = state.blobs.stage()
    blob.write(b'{"messages": [{"role": "user", "content": "a"}]}\n')
    upload = ReceivedUpload(fields={"purpose": "fine-tune"}, filename="t.jsonl", blob=blob)
    return state.files.create(principal, upload).id


def test_concurrent_retries_with_one_idempotency_key_create_one_job(state: AppState) -> None:
    principal = _principal(state)
    request = CreateJobRequest(model="tiny-chat", training_file=_training_file(state, principal))

    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda _: state.jobs.create(principal, request, "retry-1"), range(12)))

    assert len({job.id for job in jobs}) == 1
    with state.db.read() as session:
        assert session.scalar(select(func.count()).select_from(FineTuningJob)) == 1
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_a_forgotten_key_creates_anew(state: AppState) -> None:
    principal = _principal(state)
    request = CreateJobRequest(model="tiny-chat", training_file=_training_file(state, principal))
    first = state.jobs.create(principal, request, "k")
    with state.db.write() as session:  # the key was used more than its lifetime ago
        row = session.scalars(select(IdempotencyKey)).one()
        row.created_at -= int(state.settings.idempotency_key_hours * 3600) + 1

    again = state.jobs.create(principal, request, "k")

    assert again.id != first.id
    assert state.jobs.create(principal, request, "k").id == again.id
