"""Per-key rate limits, per-project caps (active jobs, stored bytes) and OpenAI's 429s.

Rate limits count requests and tokens per API key over a sliding minute, in the database, so
every API process and replica shares one count: each second a key is used gets a row, and a
key's use is the sum of the rows of the last 60 seconds (a burst at a minute's end still counts
at the next one's start; capacity comes back as the oldest seconds leave the minute, so a
refused request waits at most a minute). A key without a limit (the default) costs nothing: no
row is written. A key's requests are admitted one at a time (SQLite's single writer, a
PostgreSQL advisory lock per key): the minute is summed and the request counted only when it
fits; a refused request is not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth.principal import Principal
from service.db.database import Database, add_to_row
from service.db.models import File, FineTuningJob, Project, RateLimitWindow, Upload, UploadPart
from service.errors import InvalidRequestError, OpenFTError
from service.settings import Settings

MINUTE_S = 60
ADVISORY_LOCK_CLASS = 0x6F66_726C  # PostgreSQL advisory locks of rate-limited keys
ACTIVE_JOB_STATUSES = ("validating_files", "queued", "running", "paused")
RATE_LIMIT_DOCS = "Limits are set by your OpenFT operator (`openft keys limits`)."


class RateLimitError(OpenFTError):
    """429 in OpenAI's words; ``type`` says which limit (``requests`` or ``tokens``)."""

    status_code = 429
    error_type = "requests"

    def __init__(self, message: str, *, error_type: str, headers: dict[str, str]) -> None:
        super().__init__(message, code="rate_limit_exceeded", headers=headers)
        self.error_type = error_type  # type: ignore[misc]  # per instance: requests | tokens


@dataclass(frozen=True)
class KeyLimits:
    """What one key may use per minute (None: unlimited)."""

    requests: int | None
    tokens: int | None

    @property
    def unlimited(self) -> bool:
        return self.requests is None and self.tokens is None


@dataclass(frozen=True)
class MinuteUse:
    """One key's use of one limit (requests or tokens) over the minute before ``now``: what
    each second counted, oldest first."""

    seconds: tuple[tuple[int, int], ...]  # (second, amount)
    now: float

    @property
    def used(self) -> int:
        return max(0, sum(amount for _, amount in self.seconds))

    @property
    def resets_in_s(self) -> float:
        """Until nothing counts any more: OpenAI's reset, back to the whole limit."""
        counted = [second for second, amount in self.seconds if amount > 0]
        return max(0.0, counted[-1] + MINUTE_S - self.now) if counted else 0.0

    def wait_s(self, limit: int, amount: int) -> float:
        """Until ``amount`` more fits under ``limit``, as the oldest seconds leave the minute."""
        used = self.used
        if used + amount <= limit:
            return 0.0
        for second, counted in self.seconds:
            used -= counted
            if used + amount <= limit:
                return max(0.0, second + MINUTE_S - self.now)
        return 0.0

    def plus(self, second: int, amount: int) -> MinuteUse:
        return MinuteUse((*self.seconds, (second, amount)), self.now)


@dataclass(frozen=True)
class KeyUse:
    requests: MinuteUse
    tokens: MinuteUse

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]], now: float) -> KeyUse:
        """From ``(second, requests, tokens)`` rows, oldest first."""
        return cls(
            MinuteUse(tuple((second, requests) for second, requests, _ in rows), now),
            MinuteUse(tuple((second, tokens) for second, _, tokens in rows), now),
        )


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def limit_headers(limits: KeyLimits, use: KeyUse) -> dict[str, str]:
    """``x-ratelimit-*`` for the limits a key has (none for an unlimited dimension)."""
    headers: dict[str, str] = {}
    for name, limit, counted in (
        ("requests", limits.requests, use.requests),
        ("tokens", limits.tokens, use.tokens),
    ):
        if limit is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - counted.used))
            headers[f"x-ratelimit-reset-{name}"] = duration(counted.resets_in_s)
    return headers


def estimated_tokens(body: dict[str, Any]) -> int:
    """Tokens a chat or completions request is charged up front, as OpenAI estimates them:
    about four characters a token for the prompt, plus ``max_tokens`` when given (without it,
    the completion is charged once its length is known)."""
    prompt = body.get("messages", body.get("prompt", ""))
    characters = len(str(prompt))
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    n = body.get("n") or 1
    completion = completion if isinstance(completion, int) else 0
    n = n if isinstance(n, int) and n > 0 else 1
    return math.ceil(characters / 4) + completion * n


class RateLimiter:
    """Counts each limited key's requests and tokens over the shared sliding minute."""

    def __init__(
        self, db: Database, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._clock = clock
        self._default = KeyLimits(
            settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute
        )

    def limits_of(self, principal: Principal) -> KeyLimits:
        return KeyLimits(
            principal.requests_per_minute
            if principal.requests_per_minute is not None
            else self._default.requests,
            principal.tokens_per_minute
            if principal.tokens_per_minute is not None
            else self._default.tokens,
        )

    def admit(self, principal: Principal, *, requests: int = 1, tokens: int = 0) -> dict[str, str]:
        """Count a request (and its estimated tokens) or raise ``RateLimitError``; returns the
        ``x-ratelimit-*`` headers for the response (empty for an unlimited key)."""
        limits = self.limits_of(principal)
        if limits.unlimited:
            return {}
        now = self._clock()
        second = int(now)
        with self._db.write() as session:
            _lock_key(session, principal.key_id)
            use = _minute_use(session, principal.key_id, now)
            fits = _fits(limits, use, requests, tokens)
            if fits:
                _add(session, principal.key_id, second, requests, tokens)
        if fits:
            counted = KeyUse(use.requests.plus(second, requests), use.tokens.plus(second, tokens))
            return limit_headers(limits, counted)
        wait_s = _wait_s(limits, use, requests, tokens)
        headers = limit_headers(limits, use)
        headers["retry-after"] = str(max(1, math.ceil(wait_s)))
        raise _refusal(principal, limits, use, requests, tokens, wait_s, headers)

    async def admit_tokens(
        self, principal: Principal, bodies: Sequence[dict[str, Any]]
    ) -> dict[str, str]:
        """Charge the estimated tokens of all ``bodies`` to a key with a tokens-per-minute limit,
        at once or not at all (the 429): work made of many requests either fits the key's minute
        or does not start. The ``x-ratelimit-*`` headers; for other keys nothing (no query)."""
        if not self.counts_tokens(principal):
            return {}
        tokens = sum(estimated_tokens(body) for body in bodies)
        return await run_in_threadpool(self.admit, principal, requests=0, tokens=tokens)

    def counts_tokens(self, principal: Principal) -> bool:
        """Whether the key has a token limit, so answers' real token counts must be charged."""
        return self.limits_of(principal).tokens is not None

    def charge(self, principal: Principal, tokens: int) -> None:
        """Add tokens known only after the answer (negative to give back an over-estimate)."""
        if tokens == 0 or not self.counts_tokens(principal):
            return
        with self._db.write() as session:
            _add(session, principal.key_id, int(self._clock()), 0, tokens)

    def sweep(self, older_than_s: float = 2 * MINUTE_S) -> int:
        """Drop seconds that left the minute."""
        cutoff = int(self._clock() - older_than_s)
        with self._db.write() as session:
            result = session.execute(
                delete(RateLimitWindow).where(RateLimitWindow.window_start < cutoff)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _wait_s(limits: KeyLimits, use: KeyUse, requests: int, tokens: int) -> float:
    """Until a refused request would fit every limit it was refused by."""
    waits = [0.0]
    if limits.requests is not None and requests <= limits.requests:
        waits.append(use.requests.wait_s(limits.requests, requests))
    if limits.tokens is not None and tokens <= limits.tokens:
        waits.append(use.tokens.wait_s(limits.tokens, tokens))
    return max(waits)


def _refusal(
    principal: Principal,
    limits: KeyLimits,
    use: KeyUse,
    requests: int,
    tokens: int,
    wait_s: float,
    headers: dict[str, str],
) -> RateLimitError:
    wait = duration(wait_s)
    if limits.requests is not None and use.requests.used + requests > limits.requests:
        return RateLimitError(
            f"Rate limit reached for requests per min (RPM) on API key {principal.key_id} of "
            f"project {principal.project_slug}: Limit {limits.requests}, Used "
            f"{use.requests.used}, Requested {requests}. Please try again in {wait}. "
            f"{RATE_LIMIT_DOCS}",
            error_type="requests",
            headers=headers,
        )
    assert limits.tokens is not None
    return RateLimitError(
        f"Rate limit reached for tokens per min (TPM) on API key {principal.key_id} of project "
        f"{principal.project_slug}: Limit {limits.tokens}, Used {use.tokens.used}, Requested "
        f"{tokens}. Please try again in {wait}. {RATE_LIMIT_DOCS}",
        error_type="tokens",
        headers=headers,
    )


def _add(session: Session, key_id: str, second: int, requests: int, tokens: int) -> None:
    """Add to the key's row for ``second`` (created with these)."""
    values = {"key_id": key_id, "window_start": second, "requests": requests, "tokens": tokens}
    add_to_row(
        session,
        RateLimitWindow,
        values,
        index=("key_id", "window_start"),
        counters=("requests", "tokens"),
    )


def _fits(limits: KeyLimits, use: KeyUse, requests: int, tokens: int) -> bool:
    return (limits.requests is None or use.requests.used + requests <= limits.requests) and (
        limits.tokens is None or use.tokens.used + tokens <= limits.tokens
    )


def _lock_key(session: Session, key_id: str) -> None:
    """Admit one request of a key at a time (SQLite's writers are serial already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(ADVISORY_LOCK_CLASS, func.hashtext(key_id)))
        )


def _minute_use(session: Session, key_id: str, now: float) -> KeyUse:
    W = RateLimitWindow
    rows = session.execute(
        select(W.window_start, W.requests, W.tokens)
        .where(W.key_id == key_id, W.window_start > now - MINUTE_S)
        .order_by(W.window_start)
    ).all()
    return KeyUse.of([(int(s), int(r), int(t)) for s, r, t in rows], now)


# --- per-project caps --------------------------------------------------------------------------


def check_active_jobs(session: Session, principal: Principal, settings: Settings) -> None:
    """Refuse a new job while the project has its maximum of jobs not yet finished."""
    cap = (
        principal.max_active_jobs
        if principal.max_active_jobs is not None
        else settings.max_active_jobs_per_project
    )
    if cap is None:
        return
    lock_project(session, principal.project_id)
    active = session.scalar(
        select(func.count())
        .select_from(FineTuningJob)
        .where(
            FineTuningJob.project_id == principal.project_id,
            FineTuningJob.status.in_(ACTIVE_JOB_STATUSES),
        )
    )
    if (active or 0) >= cap:
        raise RateLimitError(
            f"This project already has {active} active fine-tuning jobs, its limit is {cap}. "
            "Wait for a job to finish or cancel one, then try again.",
            error_type="invalid_request_error",
            headers={"retry-after": "60"},
        )


def lock_project(session: Session, project_id: str) -> None:
    """Serialize a project's count-then-insert checks (SQLite's writers are serial already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Project.seq).where(Project.id == project_id).with_for_update())


def storage_quota(principal: Principal, settings: Settings) -> int | None:
    if principal.storage_quota_bytes is not None:
        return principal.storage_quota_bytes
    return settings.storage_quota_bytes_per_project


def stored_bytes(session: Session, project_id: str) -> int:
    """Bytes a project holds: its live files and the parts of its pending uploads."""
    files = session.scalar(
        select(func.coalesce(func.sum(File.bytes), 0)).where(File.project_id == project_id)
    )
    parts = session.scalar(
        select(func.coalesce(func.sum(UploadPart.bytes), 0))
        .join(Upload, Upload.id == UploadPart.upload_id)
        .where(Upload.project_id == project_id, Upload.status == "pending")
    )
    return int(files or 0) + int(parts or 0)


def check_storage(
    session: Session,
    principal: Principal,
    settings: Settings,
    adding: int,
    *,
    param: str,
    already_added: bool = False,
) -> None:
    """Refuse ``adding`` bytes that would take the project past its storage quota
    (``already_added``: the session already holds the new row)."""
    quota = storage_quota(principal, settings)
    if quota is None:
        return
    lock_project(session, principal.project_id)
    used = stored_bytes(session, principal.project_id) - (adding if already_added else 0)
    if used + adding > quota:
        raise InvalidRequestError(
            f"This would store {adding} more bytes, but the project holds {used} of its "
            f"{quota}-byte storage quota. Delete files you no longer need, or ask your OpenFT "
            "operator to raise the quota.",
            param=param,
            code="storage_quota_exceeded",
        )
