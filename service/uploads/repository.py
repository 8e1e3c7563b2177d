"""SQL for uploads and their parts. Reads are confined to one project."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Upload, UploadPart


def get(session: Session, project_id: str, upload_id: str, *, lock: bool = False) -> Upload | None:
    query = select(Upload).where(Upload.project_id == project_id, Upload.id == upload_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def parts(session: Session, upload_id: str, part_ids: list[str]) -> dict[str, UploadPart]:
    found = session.scalars(
        select(UploadPart).where(UploadPart.upload_id == upload_id, UploadPart.id.in_(part_ids))
    )
    return {part.id: part for part in found}


def all_part_ids(session: Session, upload_id: str) -> list[str]:
    return list(session.scalars(select(UploadPart.id).where(UploadPart.upload_id == upload_id)))


def stale(session: Session, now: int, limit: int) -> list[Upload]:
    """Pending uploads past their expiry, oldest first."""
    return list(
        session.scalars(
            select(Upload)
            .where(Upload.status == "pending", Upload.expires_at <= now)
            .order_by(Upload.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def live_part_ids(session: Session, upload_id: str, part_ids: list[str]) -> set[str]:
    """Those of ``part_ids`` that have a row and belong to a pending upload."""
    return set(
        session.scalars(
            select(UploadPart.id)
            .join(Upload, Upload.id == UploadPart.upload_id)
            .where(
                UploadPart.upload_id == upload_id,
                UploadPart.id.in_(part_ids),
                Upload.status == "pending",
            )
        )
    )
