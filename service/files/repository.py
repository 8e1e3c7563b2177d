"""SQL for file rows. Every query is confined to one project and hides expired files."""

from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, delete, or_, select
from sqlalchemy.orm import Session

from service.db.models import File
from service.pagination import Cursor, Order, after_cursor


def _live(now: int | BindParameter[int]) -> ColumnElement[bool]:
    return or_(File.expires_at.is_(None), File.expires_at > now)


# Built once: a retrieve (polled by clients) skips building and coercing the statement.
_LIVE_BY_ID = select(File).where(
    File.project_id == bindparam("project_id"),
    File.id == bindparam("file_id"),
    _live(bindparam("now")),
)


def get(session: Session, project_id: str, file_id: str, now: int) -> File | None:
    found = session.scalars(_LIVE_BY_ID, {"project_id": project_id, "file_id": file_id, "now": now})
    return found.one_or_none()


def position(project_id: str, file_id: str) -> Select[int]:
    return select(File.seq).where(File.project_id == project_id, File.id == file_id)


def page(
    session: Session,
    project_id: str,
    *,
    now: int,
    purpose: str | None,
    after_seq: Cursor,
    order: Order,
    limit: int,
) -> list[File]:
    query = select(File).where(File.project_id == project_id, _live(now))
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    return list(session.scalars(after_cursor(query, File.seq, after_seq, order).limit(limit + 1)))


def remove(session: Session, project_id: str, file_id: str) -> bool:
    result = session.execute(delete(File).where(File.project_id == project_id, File.id == file_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def expired_ids(session: Session, now: int, limit: int) -> list[str]:
    return list(
        session.scalars(
            select(File.id).where(File.expires_at <= now).order_by(File.expires_at).limit(limit)
        )
    )


def remove_by_ids(session: Session, file_ids: list[str]) -> None:
    session.execute(delete(File).where(File.id.in_(file_ids)))


def existing_ids(session: Session, file_ids: list[str]) -> set[str]:
    return set(session.scalars(select(File.id).where(File.id.in_(file_ids))))
