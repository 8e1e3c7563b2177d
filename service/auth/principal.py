"""Who is calling: the authenticated project every query of a request is confined to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the project every query of this request is confined to."""

    project_id: str
    project_slug: str
    key_id: str
    # The key's and project's own limits; None means the deployment's default (service.limits).
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_active_jobs: int | None = None
    storage_quota_bytes: int | None = None


@dataclass(frozen=True)
class Admin:
    """An operator calling an admin route with an admin key: it acts on no project of its own."""

    key_id: str
