"""The outbox: one pending delivery per subscribed endpoint, written in the transaction that
ends the job or batch.

Whoever ends a job (worker, reaper, cancel, a deleted file) or a batch (its runner) only inserts
rows here, so nothing that changes a status ever waits on a receiver; ``service.webhooks.sender``
sends them.
"""

from __future__ import annotations

import json
import time
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Batch, FineTuningJob, WebhookDelivery, WebhookEndpoint
from service.ids import new_webhook_delivery_id, new_webhook_event_id

JOB_EVENTS: Final = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
BATCH_EVENTS: Final = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "cancelled": "batch.cancelled",
    "expired": "batch.expired",
}
EVENT_TYPES: Final = (*JOB_EVENTS.values(), *BATCH_EVENTS.values())


def event_payload(event_id: str, event_type: str, created_at: int, object_id: str) -> str:
    """OpenAI's webhook body for a job or batch event: the exact text that is signed and sent."""
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": object_id},
    }
    return json.dumps(body, separators=(",", ":"))


def enqueue_job_event(session: Session, job: FineTuningJob) -> int:
    """Queue the job's terminal event for every endpoint of its project that wants it.

    Returns how many deliveries were queued. Runs in the transaction that ends the job, so the
    event exists exactly when the status does.
    """
    return _enqueue(session, job.project_id, JOB_EVENTS.get(job.status), job.id)


def enqueue_batch_event(session: Session, batch: Batch) -> int:
    """Queue the batch's terminal event (``batch.completed`` …), as for jobs."""
    return _enqueue(session, batch.project_id, BATCH_EVENTS.get(batch.status), batch.id)


def _enqueue(session: Session, project_id: str, event_type: str | None, object_id: str) -> int:
    if event_type is None:
        return 0
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.project_id == project_id, WebhookEndpoint.disabled_at.is_(None)
        )
    ).all()
    wanted = [e for e in endpoints if event_type in e.event_types]
    if not wanted:
        return 0
    now = int(time.time())
    event_id = new_webhook_event_id()
    payload = event_payload(event_id, event_type, now, object_id)
    for endpoint in wanted:
        session.add(
            WebhookDelivery(
                id=new_webhook_delivery_id(),
                event_id=event_id,
                endpoint_id=endpoint.id,
                project_id=project_id,
                event_type=event_type,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(wanted)
