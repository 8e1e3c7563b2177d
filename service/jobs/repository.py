"""SQL for fine-tuning jobs and events. Reads are confined to one project."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import FineTuningJob, FineTuningJobEvent
from service.ids import new_event_id
from service.pagination import after_cursor


def get(session: Session, project_id: str, job_id: str) -> FineTuningJob | None:
    return session.scalars(
        select(FineTuningJob).where(
            FineTuningJob.project_id == project_id, FineTuningJob.id == job_id
        )
    ).one_or_none()


def seq_of(session: Session, project_id: str, job_id: str) -> int | None:
    return session.scalars(
        select(FineTuningJob.seq).where(
            FineTuningJob.project_id == project_id, FineTuningJob.id == job_id
        )
    ).one_or_none()


def page(
    session: Session,
    project_id: str,
    *,
    metadata: dict[str, str],
    after_seq: int | None,
    limit: int,
) -> list[FineTuningJob]:
    """Newest first; every ``metadata`` pair must match."""
    query = select(FineTuningJob).where(FineTuningJob.project_id == project_id)
    for key, value in metadata.items():
        query = query.where(FineTuningJob.job_metadata[key].as_string() == value)
    ordered = after_cursor(query, FineTuningJob.seq, after_seq, "desc")
    return list(session.scalars(ordered.limit(limit + 1)))


def event_seq_of(session: Session, job_id: str, event_id: str) -> int | None:
    return session.scalars(
        select(FineTuningJobEvent.seq).where(
            FineTuningJobEvent.job_id == job_id, FineTuningJobEvent.id == event_id
        )
    ).one_or_none()


def events_page(
    session: Session, job_id: str, *, after_seq: int | None, limit: int
) -> list[FineTuningJobEvent]:
    """Newest first, as OpenAI lists them."""
    query = select(FineTuningJobEvent).where(FineTuningJobEvent.job_id == job_id)
    ordered = after_cursor(query, FineTuningJobEvent.seq, after_seq, "desc")
    return list(session.scalars(ordered.limit(limit + 1)))


def add_event(
    session: Session,
    job: FineTuningJob,
    message: str,
    *,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> FineTuningJobEvent:
    """Append an event; ``data`` makes it a ``metrics`` event."""
    event = FineTuningJobEvent(
        id=new_event_id(),
        job_id=job.id,
        project_id=job.project_id,
        created_at=int(time.time()),
        level=level,
        message=message,
        type="metrics" if data is not None else "message",
        data=data or {},
    )
    session.add(event)
    return event


def succeeded_with_model(session: Session, project_id: str, model: str) -> FineTuningJob | None:
    """The project's job that produced fine-tuned model ``model``, if it succeeded."""
    return session.scalars(
        select(FineTuningJob).where(
            FineTuningJob.project_id == project_id,
            FineTuningJob.fine_tuned_model == model,
            FineTuningJob.status == "succeeded",
            FineTuningJob.model_deleted_at.is_(None),
        )
    ).one_or_none()
