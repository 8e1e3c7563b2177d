"""A job's records, written under its lease by the worker and by the API: events and published
checkpoints, each kept once per step so a resumed run never duplicates them."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.db.models import FineTuningJob, FineTuningJobCheckpoint, FineTuningJobEvent
from service.ids import new_checkpoint_id, new_event_id


def add_event(
    session: Session,
    job: FineTuningJob,
    message: str,
    *,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> FineTuningJobEvent:
    """Append an event; ``data`` makes it a ``metrics`` event, kept once per step.

    A resumed run repeats the steps after its snapshot: their metrics events already exist, and
    the existing one is returned (the unique index on (job, type, step) backs this up).
    """
    step = data.get("step") if data is not None else None
    if step is not None:
        existing = session.scalars(
            select(FineTuningJobEvent).where(
                FineTuningJobEvent.job_id == job.id,
                FineTuningJobEvent.type == "metrics",
                FineTuningJobEvent.step == step,
            )
        ).one_or_none()
        if existing is not None:
            return existing
    event = FineTuningJobEvent(
        id=new_event_id(),
        job_id=job.id,
        project_id=job.project_id,
        created_at=int(time.time()),
        level=level,
        message=message,
        type="metrics" if data is not None else "message",
        data=data or {},
        step=step,
    )
    session.add(event)
    return event


def has_event(session: Session, job_id: str, message: str) -> bool:
    found = session.scalars(
        select(FineTuningJobEvent.seq)
        .where(FineTuningJobEvent.job_id == job_id, FineTuningJobEvent.message == message)
        .limit(1)
    ).first()
    return found is not None


def has_event_starting(session: Session, job_id: str, opening: str) -> bool:
    """Whether the job has an event whose message begins with ``opening`` (its numbers vary)."""
    found = session.scalars(
        select(FineTuningJobEvent.seq)
        .where(
            FineTuningJobEvent.job_id == job_id,
            FineTuningJobEvent.message.startswith(opening, autoescape=True),
        )
        .limit(1)
    ).first()
    return found is not None


def add_checkpoint(
    session: Session, job: FineTuningJob, step: int, name: str, metrics: dict[str, Any]
) -> FineTuningJobCheckpoint:
    """Record a published checkpoint once per (job, step); a resumed run finds the first one."""
    existing = session.scalars(
        select(FineTuningJobCheckpoint).where(
            FineTuningJobCheckpoint.job_id == job.id, FineTuningJobCheckpoint.step == step
        )
    ).one_or_none()
    if existing is not None:
        return existing
    checkpoint = FineTuningJobCheckpoint(
        id=new_checkpoint_id(),
        job_id=job.id,
        project_id=job.project_id,
        step=step,
        name=name,
        metrics=metrics,
        created_at=int(time.time()),
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def job_checkpoints(session: Session, job_id: str) -> list[FineTuningJobCheckpoint]:
    """A job's published checkpoints, newest first."""
    return list(
        session.scalars(
            select(FineTuningJobCheckpoint)
            .where(FineTuningJobCheckpoint.job_id == job_id)
            .order_by(FineTuningJobCheckpoint.step.desc())
        )
    )


def prune_checkpoints(
    session: Session, job_id: str, keep: int, spare: int | Collection[int] | None = None
) -> list[int]:
    """Delete all but the ``keep`` newest checkpoints of a job and those at the ``spare``
    step(s); returns the steps removed."""
    spared = {spare} if isinstance(spare, int) else set(spare or ())
    steps = list(
        session.scalars(
            select(FineTuningJobCheckpoint.step)
            .where(FineTuningJobCheckpoint.job_id == job_id)
            .order_by(FineTuningJobCheckpoint.step.desc())
        )
    )
    removed = [step for step in steps[keep:] if step not in spared]
    if removed:
        session.execute(
            delete(FineTuningJobCheckpoint).where(
                FineTuningJobCheckpoint.job_id == job_id,
                FineTuningJobCheckpoint.step.in_(removed),
            )
        )
    return removed
