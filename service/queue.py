"""The job queue in SQL: claim with a lease, guarded writes by the lease holder, transitions.

One claim statement serves both databases: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and on
SQLite the write transaction's ``BEGIN IMMEDIATE`` serialises claimers. Lease times come from the
database's clock, so workers on machines whose clocks disagree still agree on expiry. Every write a
worker makes is guarded by ``lease_owner`` and ``attempt`` (a fencing token bumped by each claim),
and by the status it expects, so a job that was cancelled, paused, or re-claimed after a lost lease
is never overwritten by a stale worker. ``lost_leases`` counts the leases that expired (a worker
died); graceful hand-overs do not count, and past ``max_lost_leases`` the reaper fails the job.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, Update, bindparam, or_, select, update
from sqlalchemy.orm import Session, object_session

from service import job_records
from service.db.clock import database_now, now_in_sql
from service.db.database import Database
from service.db.models import FineTuningJob, Project
from service.webhooks import outbox

CLAIMABLE = ("validating_files", "queued")
LEASED = (*CLAIMABLE, "running")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "validating_files": ("queued", "failed", "cancelled", "paused"),
    "queued": ("running", "failed", "cancelled", "paused"),
    "running": ("succeeded", "failed", "cancelled", "queued", "paused"),
    "paused": ("queued", "failed", "cancelled"),
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
    parent_job_id: str | None = None  # continued training: the adapter the job starts from
    parent_variant: str | None = None
    integrations: tuple[dict[str, Any], ...] = ()  # where else its metrics go (W&B, MLflow)


def transition(job: FineTuningJob, status: str) -> None:
    """The one place a job's status changes; refuses changes the lifecycle does not allow.

    A job that finishes gets its webhook events queued in the same transaction (the outbox).
    """
    if status not in TRANSITIONS[job.status]:
        raise InvalidTransitionError(f"{job.id}: {job.status} -> {status} is not allowed")
    job.status = status
    if not TRANSITIONS[status]:
        session = object_session(job)
        if session is None:
            raise RuntimeError(f"{job.id} must belong to a session to finish")
        outbox.enqueue_job_event(session, job)


def claim(db: Database, owner: str, lease_s: int) -> Claim | None:
    """Take the oldest claimable job whose lease is free or expired (one round trip on
    PostgreSQL: ``_claim_statement``)."""
    with db.write_one() as session:
        found = session.execute(
            _claim_statement(db.dialect), {"owner": owner, "lease_s": lease_s}
        ).first()
    if found is None:
        return None
    fields = dict(found._mapping)
    return Claim(**{**fields, "integrations": tuple(fields["integrations"] or ())})


@functools.cache
def _claim_statement(dialect: str) -> Update:
    """``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, reading the
    database's clock in the same statement; built once, on the table (no ORM machinery)."""
    table = cast(Table, FineTuningJob.__table__)
    jobs, now = table.c, now_in_sql(dialect)
    oldest_free = (
        select(jobs.id)
        .where(
            jobs.status.in_(CLAIMABLE),
            or_(jobs.lease_owner.is_(None), jobs.lease_expires_at < now),
        )
        .order_by(jobs.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    slug = select(Project.slug).where(Project.id == jobs.project_id).scalar_subquery()
    return (
        update(table)
        .where(jobs.id == oldest_free)
        .values(
            lease_owner=bindparam("owner"),
            lease_expires_at=now + bindparam("lease_s"),
            attempt=jobs.attempt + 1,
        )
        .returning(  # named as Claim's fields
            jobs.id.label("job_id"), jobs.project_id, slug.label("project_slug"), jobs.model,
            jobs.training_file, jobs.validation_file, jobs.suffix, jobs.seed, jobs.method,
            jobs.status, jobs.lease_owner.label("owner"), jobs.attempt, jobs.parent_job_id,
            jobs.parent_variant, jobs.integrations,
        )
    )  # fmt: skip


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
        with held(db, claim, *LEASED) as (session, job):
            job.lease_expires_at = database_now(session) + lease_s
        return True
    except LeaseLostError:
        return False


def stop_reason(db: Database, claim: Claim) -> str | None:
    """Why the worker should stop training now: "lost" (cancelled, re-claimed), "pause", or None."""
    with db.read() as session:
        row = session.execute(
            select(
                FineTuningJob.lease_owner,
                FineTuningJob.attempt,
                FineTuningJob.cancel_requested,
                FineTuningJob.status,
            ).where(FineTuningJob.id == claim.job_id)
        ).one_or_none()
    if row is None or (row[0], row[1], row[2]) != (claim.owner, claim.attempt, False):
        return "lost"
    # "queued" under our lease: paused and resumed before we noticed. Either way, save a
    # snapshot and let go; the queue hands the job out again and it resumes from there.
    return "pause" if row[3] in ("paused", "queued") else None


def advance(db: Database, claim: Claim, expected: str, status: str, message: str) -> None:
    """Move the job from ``expected`` to ``status`` and log ``message`` as its event."""
    with held(db, claim, expected) as (session, job):
        transition(job, status)
        job_records.add_event(session, job, message)


def fail(db: Database, claim: Claim, code: str, message: str, param: str | None) -> None:
    """End the job as failed with OpenAI's error object; no-op if it is no longer ours."""
    try:
        with held(db, claim, *LEASED) as (session, job):
            mark_failed(session, job, code, message, param)
    except LeaseLostError:
        pass


def mark_failed(
    session: Session, job: FineTuningJob, code: str, message: str, param: str | None
) -> None:
    """The one way a job ends failed: OpenAI's error object, no lease, an error event."""
    transition(job, "failed")
    job.error = {"code": code, "message": message, "param": param}
    job.finished_at = int(time.time())
    job.estimated_finish = None
    job.lease_owner = None
    job.lease_expires_at = None
    job_records.add_event(session, job, message, level="error")


@dataclass(frozen=True)
class JobError:
    """OpenAI's ``error`` object of a failed job."""

    code: str
    message: str
    param: str | None


def deleted_file_error(kind: Literal["training", "validation"]) -> JobError:
    """Why a job whose training or validation file was deleted before training fails (whether
    the deletion or the worker noticed first)."""
    return JobError(
        f"deleted_{kind}_file",
        f"The job failed because the {kind} file was deleted",
        f"{kind}_file",
    )


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
        error = deleted_file_error("training" if job.training_file in file_ids else "validation")
        mark_failed(session, job, error.code, error.message, error.param)
    return [job.id for job in jobs]


def release(db: Database, claim: Claim, message: str) -> None:
    """Give a job back to the queue (graceful shutdown) without counting it as a lost lease."""
    try:
        with held(db, claim, *LEASED) as (session, job):
            if job.status == "running":
                transition(job, "queued")
                job_records.add_event(session, job, message)
            job.estimated_finish = None
            job.lease_owner = None
            job.lease_expires_at = None
    except LeaseLostError:
        pass


def let_go(db: Database, claim: Claim) -> None:
    """Free the lease if it is still ours, whatever the job's status (paused, resumed, ...).

    A worker that stops working on a job calls this, so the job never waits for its lease to
    expire; the fencing columns make it a no-op once another worker holds the job.
    """
    with db.write() as session:
        session.execute(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == claim.job_id,
                FineTuningJob.lease_owner == claim.owner,
                FineTuningJob.attempt == claim.attempt,
            )
            .values(lease_owner=None, lease_expires_at=None)
        )


def reap_expired_leases(db: Database, max_lost_leases: int) -> list[str]:
    """Free jobs whose worker died (lease expired): queue them again, or fail them past the bound.

    Returns the ids of the jobs it touched. Safe to run from every worker at once.
    """
    touched = []
    with db.write() as session:
        now = database_now(session)
        expired = session.scalars(
            select(FineTuningJob)
            .where(
                FineTuningJob.status.in_(LEASED),
                FineTuningJob.lease_owner.is_not(None),
                FineTuningJob.lease_expires_at < now,
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            job.lease_owner = None
            job.lease_expires_at = None
            job.lost_leases += 1
            touched.append(job.id)
            if job.lost_leases > max_lost_leases:
                message = (
                    f"The job failed because its worker stopped responding {job.lost_leases} "
                    f"times (at most {max_lost_leases} restarts are allowed)"
                )
                mark_failed(session, job, "worker_lost", message, None)
            elif job.status == "running":
                transition(job, "queued")
                job_records.add_event(
                    session, job, "The worker stopped responding; the job is queued to resume",
                    level="warn",
                )  # fmt: skip
    return touched
