"""SQL for batches: every query a project makes is confined to it; the runner's writes are
guarded by its lease (owner and attempt, the fencing token each claim bumps), as the job queue's
are, so a runner that lost its batch never writes to it again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, or_, select, update
from sqlalchemy.orm import Session

from service.db.clock import database_now
from service.db.database import Database
from service.db.models import Batch, BatchLine, File, Project
from service.ids import new_file_id
from service.pagination import Cursor, after_cursor, cursor_page

KIND = "Batch"
# What a runner picks up: everything not yet terminal.
CLAIMABLE = ("validating", "in_progress", "finalizing", "cancelling")


class BatchLeaseLostError(RuntimeError):
    """The batch is no longer this runner's (taken over after a lost lease, or finished)."""


@dataclass(frozen=True)
class BatchClaim:
    """What a runner needs to know about the batch it holds."""

    batch_id: str
    project_id: str
    project_slug: str
    key_id: str
    endpoint: str
    input_file_id: str
    status: str
    expires_at: int
    output_expires_after: int | None
    owner: str
    attempt: int


def get(session: Session, project_id: str, batch_id: str) -> Batch | None:
    return session.scalars(
        select(Batch).where(Batch.id == batch_id, Batch.project_id == project_id)
    ).one_or_none()


def page(session: Session, project_id: str, *, after: str | None, limit: int) -> list[Batch]:
    """Up to ``limit + 1`` of the project's batches after ``after``, newest first."""

    def position(batch_id: str) -> Select[int]:
        return select(Batch.seq).where(Batch.id == batch_id, Batch.project_id == project_id)

    def fetch(cursor: Cursor) -> list[Batch]:
        query = after_cursor(
            select(Batch).where(Batch.project_id == project_id), Batch.seq, cursor, "desc"
        )
        return list(session.scalars(query.limit(limit + 1)))

    return cursor_page(session, after, position, fetch, KIND)


def claim(db: Database, owner: str, lease_s: int) -> BatchClaim | None:
    """Take the oldest unfinished batch whose lease is free or expired (a read first, so an
    idle runner's poll never takes the database's write lock)."""

    def free(now: int) -> ColumnElement[bool]:
        return and_(
            Batch.status.in_(CLAIMABLE),
            or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < now),
        )

    with db.read() as session:
        if session.scalar(select(Batch.seq).where(free(database_now(session))).limit(1)) is None:
            return None
    with db.write() as session:
        now = database_now(session)
        found = session.execute(
            select(Batch, Project.slug)
            .join(Project, Project.id == Batch.project_id)
            .where(free(now))
            .order_by(Batch.seq)
            .limit(1)
            .with_for_update(skip_locked=True, of=Batch)
        ).first()
        if found is None:
            return None
        batch, slug = found
        batch.lease_owner = owner
        batch.lease_expires_at = now + lease_s
        batch.attempt += 1
        return BatchClaim(
            batch.id,
            batch.project_id,
            slug,
            batch.key_id,
            batch.endpoint,
            batch.input_file_id,
            batch.status,
            batch.expires_at,
            batch.output_expires_after,
            owner,
            batch.attempt,
        )


@contextmanager
def held(db: Database, claim: BatchClaim) -> Iterator[tuple[Session, Batch]]:
    """A write transaction on the claimed batch, if it is still this runner's and unfinished;
    the row is locked, so the runner's concurrent line writes add up (PostgreSQL; SQLite's
    writers queue anyway)."""
    with db.write() as session:
        batch = session.scalars(
            select(Batch)
            .where(
                Batch.id == claim.batch_id,
                Batch.lease_owner == claim.owner,
                Batch.attempt == claim.attempt,
            )
            .with_for_update()
        ).one_or_none()
        if batch is None or batch.status not in CLAIMABLE:
            raise BatchLeaseLostError(claim.batch_id)
        yield session, batch


def renew(db: Database, claim: BatchClaim, lease_s: int) -> str | None:
    """Heartbeat: push the lease forward; the batch's status now, or None once it is not ours."""
    try:
        with held(db, claim) as (session, batch):
            batch.lease_expires_at = database_now(session) + lease_s
            return batch.status
    except BatchLeaseLostError:
        return None


def release(db: Database, claim: BatchClaim) -> None:
    """Free the lease at once (a graceful stop): another runner resumes without waiting."""
    with db.write() as session:
        session.execute(
            update(Batch)
            .where(
                Batch.id == claim.batch_id,
                Batch.lease_owner == claim.owner,
                Batch.attempt == claim.attempt,
            )
            .values(lease_owner=None, lease_expires_at=None)
        )


def finished_lines(session: Session, batch_id: str) -> set[int]:
    return set(session.scalars(select(BatchLine.line).where(BatchLine.batch_id == batch_id)))


def line_outputs(session: Session, batch_id: str) -> Iterator[BatchLine]:
    """The batch's finished lines in input order, read in pages."""
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(BatchLine)
                .where(BatchLine.batch_id == batch_id, BatchLine.line > after)
                .order_by(BatchLine.line)
                .limit(500)
            )
        )
        yield from rows
        if len(rows) < 500:
            return
        after = rows[-1].line


def output_file(claim: BatchClaim, name: str, size: int, now: int, expires_at: int) -> File:
    """The row of a finished batch's output or error file (purpose ``batch_output``)."""
    return File(
        id=new_file_id(),
        project_id=claim.project_id,
        purpose="batch_output",
        filename=f"{claim.batch_id}_{name}.jsonl",
        bytes=size,
        created_at=now,
        expires_at=expires_at,
        status="processed",
    )
