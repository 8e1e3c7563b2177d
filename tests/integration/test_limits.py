"""The shared rate-limit window and the idempotency index under concurrency, on SQLite and
PostgreSQL: what several API processes doing the same thing at once must never get wrong."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

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


def _wait_for_fresh_window(seconds_needed: float = 10) -> None:
    """Keep a test inside one minute's window."""
    if 60 - time.time() % 60 < seconds_needed:
        time.sleep(60 - time.time() % 60 + 0.05)


def test_concurrent_requests_never_exceed_the_limit(state: AppState) -> None:
    principal = _principal(state, rpm=25)
    _wait_for_fresh_window()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _admitted(state.limiter, principal), range(60)))

    assert results.count(True) == 25
    with state.db.read() as session:
        assert session.scalar(select(RateLimitWindow.requests)) == 25


def test_tokens_estimate_then_actual(state: AppState) -> None:
    principal = _principal(state, tpm=1000)
    _wait_for_fresh_window()

    assert _admitted(state.limiter, principal, tokens=900)
    assert not _admitted(state.limiter, principal, tokens=200)
    state.limiter.charge(principal, -800)  # the answer used 100 tokens, not 900

    assert _admitted(state.limiter, principal, tokens=200)
    with state.db.read() as session:
        assert session.scalar(select(RateLimitWindow.tokens)) == 300


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
