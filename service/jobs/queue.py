"""The job queue in SQL: claim with a lease, guarded writes by the lease holder, transitions.

One claim statement serves both databases: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and on
SQLite the write transaction's ``BEGIN IMMEDIATE`` serialises claimers. Every write a worker makes
is guarded by ``lease_owner`` and ``attempt``, and by the status it expects, so a job that was
cancelled, or re-claimed after a lost lease, is never overwritten by a stale worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db.database import Database
from service.db.models import FineTuningJob, Project
from service.jobs import repository

CLAIMABLE = ("validating_files", "queued")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "validating_files": ("queued", "failed", "cancelled"),
    "queued": ("running", "failed", "cancelled"),
    "running": ("succeeded", "failed", "cancelled", "queued"),
    "succeeded": (),
    "failed": (),
    "cancelled": (),
}


class InvalidTransitionError(RuntimeError):
    pass


class LeaseLostError(RuntimeError):
    """The job is no longer ours: cancelled, finished, or re-claimed by another worker."""


@dataclass(frozen=True)
class Claim:
    """What a worker needs to know about the job it holds."""

    job_id: str
    project_id: str
    project_slug: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    method: dict[str, Any]
    status: str
    owner: str
    attempt: int


def transition(job: FineTuningJob, status: str) -> None:
    """The one place a job's status changes; refuses changes the lifecycle does not allow."""
    if status not in TRANSITIONS[job.status]:
        raise InvalidTransitionError(f"{job.id}: {job.status} -> {status} is not allowed")
    job.status = status


def claim(db: Database, owner: str, lease_s: int) -> Claim | None:
    """Take the oldest claimable job whose lease is free or expired."""
    now = int(time.time())
    query = (
        select(FineTuningJob, Project.slug)
        .join(Project, Project.id == FineTuningJob.project_id)
        .where(
            FineTuningJob.status.in_(CLAIMABLE),
            or_(FineTuningJob.lease_owner.is_(None), FineTuningJob.lease_expires_at < now),
        )
        .order_by(FineTuningJob.seq)
        .limit(1)
        .with_for_update(skip_locked=True, of=FineTuningJob)
    )
    with db.write() as session:
        found = session.execute(query).first()
        if found is None:
            return None
        job, slug = found
        job.lease_owner = owner
        job.lease_expires_at = now + lease_s
        job.attempt += 1
        return Claim(
            job.id,
            job.project_id,
            slug,
            job.model,
            job.training_file,
            job.validation_file,
            job.suffix,
            job.seed,
            job.method,
            job.status,
            owner,
            job.attempt,
        )


@contextmanager
def held(db: Database, claim: Claim, *statuses: str) -> Iterator[tuple[Session, FineTuningJob]]:
    """A write transaction on the claimed job, if it is still ours and in one of ``statuses``."""
    with db.write() as session:
        job = session.scalars(
            select(FineTuningJob).where(
                FineTuningJob.id == claim.job_id,
                FineTuningJob.lease_owner == claim.owner,
                FineTuningJob.attempt == claim.attempt,
            )
        ).one_or_none()
        if job is None or job.status not in statuses or job.cancel_requested:
            raise LeaseLostError(claim.job_id)
        yield session, job


def renew(db: Database, claim: Claim, lease_s: int) -> bool:
    """Heartbeat: push the lease forward; False once the job is no longer ours."""
    try:
        with held(db, claim, *CLAIMABLE, "running") as (_session, job):
            job.lease_expires_at = int(time.time()) + lease_s
        return True
    except LeaseLostError:
        return False


def still_ours(db: Database, claim: Claim) -> bool:
    with db.read() as session:
        row = session.execute(
            select(
                FineTuningJob.lease_owner, FineTuningJob.attempt, FineTuningJob.cancel_requested
            ).where(FineTuningJob.id == claim.job_id)
        ).one_or_none()
    return row is not None and (row[0], row[1], row[2]) == (claim.owner, claim.attempt, False)


def advance(db: Database, claim: Claim, expected: str, status: str, message: str) -> None:
    """Move the job from ``expected`` to ``status`` and log ``message`` as its event."""
    with held(db, claim, expected) as (session, job):
        transition(job, status)
        repository.add_event(session, job, message)


def fail(db: Database, claim: Claim, code: str, message: str, param: str | None) -> None:
    """End the job as failed with OpenAI's error object; no-op if it is no longer ours."""
    try:
        with held(db, claim, *CLAIMABLE, "running") as (session, job):
            transition(job, "failed")
            job.error = {"code": code, "message": message, "param": param}
            job.finished_at = int(time.time())
            job.lease_owner = None
            repository.add_event(session, job, message, level="error")
    except LeaseLostError:
        pass


def fail_jobs_needing(session: Session, file_ids: Sequence[str]) -> list[str]:
    """Fail the jobs that have not started training and need one of ``file_ids`` (deleted).

    Runs in the deleting transaction. A worker validating such a job loses it: its lease is
    cleared, so its next guarded write raises ``LeaseLostError``.
    """
    if not file_ids:
        return []
    jobs = session.scalars(
        select(FineTuningJob)
        .where(
            FineTuningJob.status.in_(CLAIMABLE),
            or_(
                FineTuningJob.training_file.in_(file_ids),
                FineTuningJob.validation_file.in_(file_ids),
            ),
        )
        .with_for_update()
    ).all()
    for job in jobs:
        kind = "training" if job.training_file in file_ids else "validation"
        message = f"The job failed because the {kind} file was deleted"
        transition(job, "failed")
        job.error = {"code": f"deleted_{kind}_file", "message": message, "param": f"{kind}_file"}
        job.finished_at = int(time.time())
        job.lease_owner = None
        job.lease_expires_at = None
        repository.add_event(session, job, message, level="error")
    return [job.id for job in jobs]


def release(db: Database, claim: Claim) -> None:
    """Give a job back to the queue (graceful shutdown); it restarts from the beginning."""
    try:
        with held(db, claim, *CLAIMABLE, "running") as (session, job):
            if job.status == "running":
                transition(job, "queued")
                repository.add_event(session, job, "Worker stopped; the job is queued again")
            job.lease_owner = None
            job.lease_expires_at = None
    except LeaseLostError:
        pass
