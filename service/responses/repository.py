"""SQL for stored responses. Every query is confined to one project and hides expired rows."""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from service.db.models import StoredResponse


def _live(now: int) -> ColumnElement[bool]:
    return or_(StoredResponse.expires_at.is_(None), StoredResponse.expires_at > now)


def get(session: Session, project_id: str, response_id: str, now: int) -> StoredResponse | None:
    return session.scalars(
        select(StoredResponse).where(
            StoredResponse.project_id == project_id,
            StoredResponse.id == response_id,
            _live(now),
        )
    ).one_or_none()


def remove(session: Session, project_id: str, response_id: str, now: int) -> bool:
    result = session.execute(
        delete(StoredResponse).where(
            StoredResponse.project_id == project_id,
            StoredResponse.id == response_id,
            _live(now),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def remove_expired(session: Session, now: int) -> int:
    result = session.execute(delete(StoredResponse).where(StoredResponse.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]
