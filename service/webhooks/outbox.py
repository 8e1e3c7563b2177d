"""The outbox: one pending delivery per subscribed endpoint, written in the job's transaction.

Whoever ends a job (worker, reaper, cancel, a deleted file) only inserts rows here, so nothing
that changes a job's status ever waits on a receiver; ``service.webhooks.sender`` sends them.
"""

from __future__ import annotations

import json
import time
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import FineTuningJob, WebhookDelivery, WebhookEndpoint
from service.ids import new_webhook_delivery_id, new_webhook_event_id

JOB_EVENTS: Final = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
EVENT_TYPES: Final = tuple(JOB_EVENTS.values())


def event_payload(event_id: str, event_type: str, created_at: int, job_id: str) -> str:
    """OpenAI's webhook body for a job event: the exact text that is signed and sent."""
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": job_id},
    }
    return json.dumps(body, separators=(",", ":"))


def enqueue_job_event(session: Session, job: FineTuningJob) -> int:
    """Queue the job's terminal event for every endpoint of its project that wants it.

    Returns how many deliveries were queued. Runs in the transaction that ends the job, so the
    event exists exactly when the status does.
    """
    event_type = JOB_EVENTS.get(job.status)
    if event_type is None:
        return 0
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.project_id == job.project_id, WebhookEndpoint.disabled_at.is_(None)
        )
    ).all()
    wanted = [e for e in endpoints if event_type in e.event_types]
    if not wanted:
        return 0
    now = int(time.time())
    event_id = new_webhook_event_id()
    payload = event_payload(event_id, event_type, now, job.id)
    for endpoint in wanted:
        session.add(
            WebhookDelivery(
                id=new_webhook_delivery_id(),
                event_id=event_id,
                endpoint_id=endpoint.id,
                project_id=job.project_id,
                event_type=event_type,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(wanted)
