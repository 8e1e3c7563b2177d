"""Durable usage: one row per project, model and hour, added to as requests and jobs finish.

Prometheus counters reset when a process restarts; these rows do not, so chargeback and the
``openft usage report`` read them. The gateway adds served requests through ``UsageWriter`` (off the
request's path, many requests per transaction), the worker each finished job (trained tokens and
seconds). Costs are computed from them with the base model's prices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.database import Database, add_to_row
from service.db.models import Project, UsageHour
from service.prices import cost_of
from service.settings import BaseModelConfig

HOUR = 3600
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "trained_tokens", "training_seconds")
WRITE_EVERY_S = 1.0
log = logging.getLogger(__name__)


def add_usage(
    session: Session,
    *,
    project_id: str,
    model: str,
    base_model: str,
    at: float | None = None,
    requests: int = 0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    trained_tokens: int = 0,
    training_seconds: float = 0.0,
) -> None:
    """Add to the (project, model, hour) row, creating it: one statement, safe under concurrency."""
    hour = int((time.time() if at is None else at) // HOUR * HOUR)
    values = {
        "project_id": project_id,
        "model": model,
        "base_model": base_model,
        "hour": hour,
        "requests": requests,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "trained_tokens": trained_tokens,
        "training_seconds": training_seconds,
    }
    add_to_row(session, UsageHour, values, index=("project_id", "model", "hour"), counters=COUNTERS)


@dataclass(frozen=True, order=True)
class ServedKey:
    """The usage row a served request adds to (its hour is the hour it was served)."""

    project_id: str
    model: str
    base_model: str
    hour: int


class UsageWriter:
    """Writes served requests' usage rows off the requests' path: requests are counted here, in
    memory, and written every ``WRITE_EVERY_S`` (or at once when ``flush`` asks), summed per row,
    in one transaction. A write that fails (the database down) keeps its counts for the next
    one. A process killed with SIGKILL loses at most what was not yet written; a stopped one
    writes it first."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queued: Counter[tuple[ServedKey, str]] = Counter()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def add(
        self, *, project_id: str, model: str, base_model: str, prompt: int, completion: int
    ) -> None:
        """Count one served request (on the event loop; no I/O)."""
        key = ServedKey(project_id, model, base_model, int(time.time() // HOUR * HOUR))
        self._queued[key, "requests"] += 1
        self._queued[key, "prompt_tokens"] += prompt
        self._queued[key, "completion_tokens"] += completion
        self._schedule()

    def _schedule(self) -> None:
        """Have the timer write what is counted (unless stopping: ``aclose`` writes it)."""
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._write_every_second())

    async def flush(self) -> None:
        """Write everything counted so far, now (batch lines before their outcome)."""
        await self._write_counted()

    async def aclose(self) -> None:
        """Write what is left and stop (at shutdown)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_counted()

    async def _write_every_second(self) -> None:
        while self._queued:
            await asyncio.sleep(WRITE_EVERY_S)
            await self._write_counted()

    async def _write_counted(self) -> None:
        """Write what is counted; a write under way finishes first (so after this, every
        request counted before the call is in the database)."""
        async with self._writing:
            if not self._queued:
                return
            taken, self._queued = self._queued, Counter()
            try:
                await asyncio.to_thread(self._write, taken)
            except Exception:  # e.g. the database is down: keep the counts for the next write
                self._queued.update(taken)
                log.exception("could not write the usage of %d served requests; will retry",
                              _requests(taken))  # fmt: skip
                self._schedule()

    def _write(self, taken: Counter[tuple[ServedKey, str]]) -> None:
        rows: dict[ServedKey, dict[str, int]] = {}
        for (key, counter), value in taken.items():
            rows.setdefault(key, {})[counter] = value
        with self._db.write() as session:
            for key, counters in sorted(rows.items()):  # one lock order for every writer
                add_usage(
                    session,
                    project_id=key.project_id,
                    model=key.model,
                    base_model=key.base_model,
                    at=key.hour,
                    **counters,
                )


def _requests(taken: Counter[tuple[ServedKey, str]]) -> int:
    return sum(value for (_, counter), value in taken.items() if counter == "requests")


@dataclass(frozen=True)
class UsageLine:
    project: str
    model: str
    base_model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    trained_tokens: int
    training_seconds: float

    def cost(self, price: BaseModelConfig | None) -> float | None:
        """Dollars at the base model's prices; None when it has no price at all."""
        if price is None or price.priced is False:
            return None
        return cost_of(
            price,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            trained_tokens=self.trained_tokens,
            training_seconds=self.training_seconds,
        ).total


def report(
    session: Session, *, since: int, until: int, project: str | None = None
) -> list[UsageLine]:
    """Usage summed per project and model over the hours in [since, until)."""
    sums = [func.sum(getattr(UsageHour, name)) for name in COUNTERS]
    query = (
        select(Project.slug, UsageHour.model, UsageHour.base_model, *sums)
        .join(Project, Project.id == UsageHour.project_id)
        .where(UsageHour.hour >= since, UsageHour.hour < until)
        .group_by(Project.slug, UsageHour.model, UsageHour.base_model)
        .order_by(Project.slug, UsageHour.model)
    )
    if project is not None:
        query = query.where(Project.slug == project)
    return [
        UsageLine(
            row[0],
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
            float(row[7]),
        )
        for row in session.execute(query)
    ]
