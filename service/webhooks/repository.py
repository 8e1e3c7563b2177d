"""SQL for webhook endpoints and the delivery outbox (claimed with a lease, like the job queue)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from service.db.clock import database_now
from service.db.database import Database
from service.db.models import Project, WebhookDelivery, WebhookEndpoint

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class DueDelivery:
    """A delivery this process holds the lease on, with where and how to send it."""

    id: str
    payload: str
    attempts: int  # made before this one
    url: str
    secret: str
    endpoint_gone: bool


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: delivered, or an error and the wait before the next try
    (None: give up)."""

    delivered: bool
    error: str | None = None
    retry_in_s: float | None = None

    @property
    def result(self) -> str:
        if self.delivered:
            return "delivered"
        return "retrying" if self.retry_in_s is not None else "failed"


def endpoints(session: Session, project_slug: str | None) -> list[tuple[WebhookEndpoint, str]]:
    """Active endpoints with their project's slug, oldest first."""
    query = (
        select(WebhookEndpoint, Project.slug)
        .join(Project, Project.id == WebhookEndpoint.project_id)
        .where(WebhookEndpoint.disabled_at.is_(None))
    )
    if project_slug is not None:
        query = query.where(Project.slug == project_slug)
    return [(row, slug) for row, slug in session.execute(query.order_by(WebhookEndpoint.seq))]


def active_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint | None:
    return session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.disabled_at.is_(None)
        )
    ).one_or_none()


def claim_due(db: Database, owner: str, lease_s: int, limit: int) -> list[DueDelivery]:
    """Lease up to ``limit`` pending deliveries that are due and not held by a live lease.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several API processes claim side by side);
    SQLite's ``BEGIN IMMEDIATE`` serialises claimers.
    """
    with db.write() as session:
        now = database_now(session)
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                or_(
                    WebhookDelivery.lease_owner.is_(None),
                    WebhookDelivery.lease_expires_at < now,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.seq)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        due = []
        for delivery, endpoint in rows:
            delivery.lease_owner = owner
            delivery.lease_expires_at = now + lease_s
            due.append(
                DueDelivery(
                    delivery.id,
                    delivery.payload,
                    delivery.attempts,
                    endpoint.url,
                    endpoint.secret,
                    endpoint.disabled_at is not None,
                )
            )
        return due


def record(db: Database, owner: str, delivery_id: str, outcome: Outcome) -> None:
    """Write one attempt's outcome, if the lease is still ours (else another sender has it)."""
    with db.write() as session:
        now = database_now(session)
        values: dict[str, object] = {
            "attempts": WebhookDelivery.attempts + 1,
            "lease_owner": None,
            "lease_expires_at": None,
            "status": "pending" if outcome.result == "retrying" else outcome.result,
        }
        if outcome.delivered:
            values["delivered_at"] = now
        else:
            values["last_error"] = (outcome.error or "")[:MAX_ERROR_CHARS]
        if outcome.retry_in_s is not None:
            values["next_attempt_at"] = now + round(outcome.retry_in_s)
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.lease_owner == owner)
            .values(values)
        )


def prune_finished(db: Database, created_before: int) -> int:
    """Delete delivered and given-up deliveries created before ``created_before``."""
    with db.write() as session:
        result = session.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.status.in_(("delivered", "failed")),
                WebhookDelivery.created_at < created_before,
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
