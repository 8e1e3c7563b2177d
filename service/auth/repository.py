"""SQL for projects and API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import AdminKey, ApiKey, Project


def project_by_slug(session: Session, slug: str) -> Project | None:
    return session.scalars(select(Project).where(Project.slug == slug)).one_or_none()


def any_project(session: Session) -> bool:
    return session.scalars(select(Project.seq).limit(1)).first() is not None


def active_key_with_project(session: Session, key_hash: str) -> tuple[ApiKey, Project] | None:
    row = session.execute(
        select(ApiKey, Project)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def keys_with_projects(session: Session, project_slug: str | None) -> list[tuple[ApiKey, Project]]:
    query = select(ApiKey, Project).join(Project, Project.id == ApiKey.project_id)
    if project_slug is not None:
        query = query.where(Project.slug == project_slug)
    return [(key, project) for key, project in session.execute(query.order_by(ApiKey.seq))]


def key_by_id(session: Session, key_id: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.id == key_id)).one_or_none()


def active_admin_key(session: Session, key_hash: str) -> AdminKey | None:
    return session.scalars(
        select(AdminKey).where(AdminKey.key_hash == key_hash, AdminKey.revoked_at.is_(None))
    ).one_or_none()


def admin_keys(session: Session) -> list[AdminKey]:
    return list(session.scalars(select(AdminKey).order_by(AdminKey.seq)))


def admin_key_by_id(session: Session, key_id: str) -> AdminKey | None:
    return session.scalars(select(AdminKey).where(AdminKey.id == key_id)).one_or_none()
