"""SQL for fine-tuning jobs, their events and checkpoints as a project reads them (every read is
confined to one project)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, or_, select
from sqlalchemy.orm import Session

from service.blobstore.keys import FINAL, checkpoint_variant
from service.db.models import (
    CheckpointPermission,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
)
from service.pagination import Cursor, after_cursor

# Built once: a retrieve (the SDK's polling loop) skips building and coercing the statement.
_BY_ID = select(FineTuningJob).where(
    FineTuningJob.project_id == bindparam("project_id"), FineTuningJob.id == bindparam("job_id")
)


def get(session: Session, project_id: str, job_id: str) -> FineTuningJob | None:
    found = session.scalars(_BY_ID, {"project_id": project_id, "job_id": job_id})
    return found.one_or_none()


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


def servable_owner(session: Session, name: str) -> tuple[str, OwnedAdapter] | None:
    """The project that owns fine-tuned model or checkpoint ``name``, with its adapter, while
    it can be served (not deleted); any project's: for admins and the model servers."""
    owner = session.scalar(
        select(FineTuningJob.project_id).where(FineTuningJob.fine_tuned_model == name)
    ) or session.scalar(
        select(FineTuningJobCheckpoint.project_id).where(FineTuningJobCheckpoint.name == name)
    )
    found = None if owner is None else adapter_of(session, owner, name)
    return None if owner is None or found is None else (owner, found)


def adapter_named(session: Session, name: str) -> OwnedAdapter | None:
    """The adapter behind fine-tuned model or checkpoint ``name``, whichever project owns it:
    for the model servers, which the gateway only asks for models the caller may use."""
    found = servable_owner(session, name)
    return None if found is None else found[1]


def shared_by(session: Session, project_id: str, name: str) -> str | None:
    """The project that shared its model or checkpoint ``name`` with ``project_id`` (a
    checkpoint permission), if one did; read on every request, so a revoke is seen at once."""
    return session.scalar(
        select(CheckpointPermission.owner_project_id).where(
            CheckpointPermission.checkpoint == name, CheckpointPermission.project_id == project_id
        )
    )


def usable_adapter(session: Session, project_id: str, name: str) -> OwnedAdapter | None:
    """The adapter behind ``name`` if the project may call it or train from it: its own model
    or checkpoint, or one another project shared with it."""
    found = adapter_of(session, project_id, name)
    if found is not None:
        return found
    owner = shared_by(session, project_id, name)
    return None if owner is None else adapter_of(session, owner, name)


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
    """The training prompt profile behind a fine-tuned model or checkpoint the project may call
    (its own, or one shared with it: the profile is the model's, whoever calls it)."""
    project_id = shared_by(session, project_id, model) or project_id
    job = succeeded_with_model(session, project_id, model)
    if job is None:
        found = servable_checkpoint(session, project_id, model)
        job = found[1] if found is not None else None
    return job.prompt_profile if job is not None else None
