"""SQL for stored chat completions: every query is confined to one project, hides expired rows."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, delete, or_, select
from sqlalchemy.orm import Session

from service.db.models import StoredChatCompletion
from service.pagination import Cursor, Order, after_cursor, cursor_page

KIND = "ChatCompletion"


def _live(now: int) -> ColumnElement[bool]:
    return or_(StoredChatCompletion.expires_at.is_(None), StoredChatCompletion.expires_at > now)


def _mine(project_id: str, now: int) -> list[ColumnElement[bool]]:
    return [StoredChatCompletion.project_id == project_id, _live(now)]


def get(
    session: Session, project_id: str, completion_id: str, now: int
) -> StoredChatCompletion | None:
    return session.scalars(
        select(StoredChatCompletion).where(
            StoredChatCompletion.id == completion_id, *_mine(project_id, now)
        )
    ).one_or_none()


def page(
    session: Session,
    project_id: str,
    now: int,
    *,
    model: str | None,
    metadata: dict[str, str],
    limit: int,
    order: Order,
    after: str | None,
) -> list[StoredChatCompletion]:
    """Up to ``limit + 1`` of the project's completions after ``after``, filtered by ``model``
    and by every ``metadata`` key (exact values)."""
    filters = _mine(project_id, now)
    if model is not None:
        filters.append(StoredChatCompletion.model == model)
    for key, value in metadata.items():
        filters.append(StoredChatCompletion.metadata_[key].as_string() == value)

    def position(completion_id: str) -> Select[int]:
        return select(StoredChatCompletion.seq).where(
            StoredChatCompletion.id == completion_id, *_mine(project_id, now)
        )

    def fetch(cursor: Cursor) -> list[StoredChatCompletion]:
        query = select(StoredChatCompletion).where(*filters)
        query = after_cursor(query, StoredChatCompletion.seq, cursor, order)
        return list(session.scalars(query.limit(limit + 1)))

    return cursor_page(session, after, position, fetch, KIND)


def remove(session: Session, project_id: str, completion_id: str, now: int) -> bool:
    result = session.execute(
        delete(StoredChatCompletion).where(
            StoredChatCompletion.id == completion_id, *_mine(project_id, now)
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def remove_expired(session: Session, now: int) -> int:
    result = session.execute(
        delete(StoredChatCompletion).where(StoredChatCompletion.expires_at <= now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
