"""SQL for fine-tuning jobs and events. Reads are confined to one project."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.orm import Session

from service.blobstore.keys import FINAL, checkpoint_variant
from service.db.models import FineTuningJob, FineTuningJobCheckpoint, FineTuningJobEvent
from service.ids import new_checkpoint_id, new_event_id
from service.pagination import Cursor, after_cursor


def get(session: Session, project_id: str, job_id: str) -> FineTuningJob | None:
    return session.scalars(
        select(FineTuningJob).where(
            FineTuningJob.project_id == project_id, FineTuningJob.id == job_id
        )
    ).one_or_none()


def position(project_id: str, job_id: str) -> Select[int]:
    """The list position of the project's job ``job_id`` (for ``after`` cursors)."""
    return select(FineTuningJob.seq).where(
        FineTuningJob.project_id == project_id, FineTuningJob.id == job_id
    )


def page(
    session: Session,
    project_id: str,
    *,
    metadata: dict[str, str],
    after_seq: Cursor,
    limit: int,
) -> list[FineTuningJob]:
    """Newest first; every ``metadata`` pair must match."""
    query = select(FineTuningJob).where(FineTuningJob.project_id == project_id)
    for key, value in metadata.items():
        query = query.where(FineTuningJob.job_metadata[key].as_string() == value)
    ordered = after_cursor(query, FineTuningJob.seq, after_seq, "desc")
    return list(session.scalars(ordered.limit(limit + 1)))


JobRecord = TypeVar("JobRecord", FineTuningJobEvent, FineTuningJobCheckpoint)


def record_position(kind: type[JobRecord], job_id: str, record_id: str) -> Select[int]:
    """The list position of one of a job's events or checkpoints (for ``after`` cursors)."""
    return select(kind.seq).where(kind.job_id == job_id, kind.id == record_id)


def records_page(
    session: Session, kind: type[JobRecord], job_id: str, *, after_seq: Cursor, limit: int
) -> list[JobRecord]:
    """A job's events or checkpoints, newest first as OpenAI lists them; one extra for has_more."""
    query = select(kind).where(kind.job_id == job_id)
    ordered = after_cursor(query, kind.seq, after_seq, "desc")
    return list(session.scalars(ordered.limit(limit + 1)))


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
    session: Session, job_id: str, keep: int, spare: int | None = None
) -> list[int]:
    """Delete all but the ``keep`` newest checkpoints of a job, and the one at step ``spare``;
    returns the steps removed."""
    steps = list(
        session.scalars(
            select(FineTuningJobCheckpoint.step)
            .where(FineTuningJobCheckpoint.job_id == job_id)
            .order_by(FineTuningJobCheckpoint.step.desc())
        )
    )
    removed = [step for step in steps[keep:] if step != spare]
    if removed:
        session.execute(
            delete(FineTuningJobCheckpoint).where(
                FineTuningJobCheckpoint.job_id == job_id,
                FineTuningJobCheckpoint.step.in_(removed),
            )
        )
    return removed


def servable_checkpoint(
    session: Session, project_id: str, name: str
) -> tuple[FineTuningJobCheckpoint, FineTuningJob] | None:
    """The project's checkpoint called ``name``, with its job, unless the model was deleted."""
    found = session.execute(
        select(FineTuningJobCheckpoint, FineTuningJob)
        .join(FineTuningJob, FineTuningJob.id == FineTuningJobCheckpoint.job_id)
        .where(
            FineTuningJobCheckpoint.project_id == project_id,
            FineTuningJobCheckpoint.name == name,
            FineTuningJob.model_deleted_at.is_(None),
        )
    ).first()
    return None if found is None else (found[0], found[1])


@dataclass(frozen=True)
class OwnedAdapter:
    """A project's fine-tuned model or checkpoint: the job that trained it, which of its
    adapters (``final`` or ``step-N``), and its base model."""

    job_id: str
    variant: str
    base_model: str


def adapter_of(session: Session, project_id: str, name: str) -> OwnedAdapter | None:
    """The adapter behind the project's fine-tuned model or checkpoint ``name``, if any."""
    job = succeeded_with_model(session, project_id, name)
    if job is not None:
        return OwnedAdapter(job.id, FINAL, job.model)
    found = servable_checkpoint(session, project_id, name)
    if found is None:
        return None
    checkpoint, owner = found
    return OwnedAdapter(owner.id, checkpoint_variant(checkpoint.step), owner.model)


def project_checkpoints(session: Session, project_id: str) -> list[FineTuningJobCheckpoint]:
    """The project's checkpoints that are not the final model of their job, oldest first."""
    return list(
        session.scalars(
            select(FineTuningJobCheckpoint)
            .join(FineTuningJob, FineTuningJob.id == FineTuningJobCheckpoint.job_id)
            .where(
                FineTuningJobCheckpoint.project_id == project_id,
                FineTuningJob.model_deleted_at.is_(None),
                or_(
                    FineTuningJob.fine_tuned_model.is_(None),
                    FineTuningJobCheckpoint.name != FineTuningJob.fine_tuned_model,
                ),
            )
            .order_by(FineTuningJobCheckpoint.seq)
        )
    )


def prompt_profile_of(session: Session, project_id: str, model: str) -> dict[str, Any] | None:
    """The training prompt profile behind a project's fine-tuned model or checkpoint."""
    job = succeeded_with_model(session, project_id, model)
    if job is None:
        found = servable_checkpoint(session, project_id, model)
        job = found[1] if found is not None else None
    return job.prompt_profile if job is not None else None
