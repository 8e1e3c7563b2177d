"""Webhook endpoints of a project: which URL gets which job events, signed with which secret."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.auth import repository as auth_repository
from service.db.database import Database
from service.db.models import WebhookEndpoint
from service.errors import InvalidRequestError, NotFoundError
from service.ids import new_webhook_endpoint_id
from service.webhooks import repository
from service.webhooks.outbox import EVENT_TYPES
from service.webhooks.signing import new_secret

MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class Endpoint:
    id: str
    project_slug: str
    url: str
    event_types: tuple[str, ...]
    created_at: int


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str  # shown once, when the endpoint is created


class WebhooksService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, project_slug: str, url: str, event_types: Sequence[str] = ()
    ) -> CreatedEndpoint:
        """A new endpoint for an existing project; all job events unless ``event_types``."""
        _check_url(url)
        wanted = tuple(dict.fromkeys(event_types)) or EVENT_TYPES
        _check_event_types(wanted)
        secret = new_secret()
        with self._db.write() as session:
            project = auth_repository.project_by_slug(session, project_slug)
            if project is None:
                raise NotFoundError(f"No such project: {project_slug}", param="project")
            row = WebhookEndpoint(
                id=new_webhook_endpoint_id(),
                project_id=project.id,
                url=url,
                secret=secret,
                event_types=list(wanted),
                created_at=int(time.time()),
            )
            session.add(row)
        return CreatedEndpoint(_endpoint(row, project.slug), secret)

    def list(self, project_slug: str | None = None) -> list[Endpoint]:
        with self._db.read() as session:
            return [
                _endpoint(row, slug) for row, slug in repository.endpoints(session, project_slug)
            ]

    def delete(self, endpoint_id: str) -> None:
        """No new events go to the endpoint; deliveries still pending for it are given up."""
        with self._db.write() as session:
            row = repository.active_endpoint(session, endpoint_id)
            if row is None:
                raise NotFoundError(f"No such webhook endpoint: {endpoint_id}", param="id")
            row.disabled_at = int(time.time())


def _endpoint(row: WebhookEndpoint, slug: str) -> Endpoint:
    return Endpoint(row.id, slug, row.url, tuple(row.event_types), row.created_at)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise InvalidRequestError(f"{url!r} is not a valid URL", param="url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"{url!r} is not an http:// or https:// URL with a host", param="url"
        )
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequestError(f"The URL is longer than {MAX_URL_CHARS} characters", param="url")


def _check_event_types(event_types: Sequence[str]) -> None:
    for event_type in event_types:
        if event_type not in EVENT_TYPES:
            raise InvalidRequestError(
                f"{event_type!r} is not one of {list(EVENT_TYPES)} - 'events'", param="events"
            )
