"""Webhooks on SQLite and PostgreSQL: the outbox written with each final status, and the sender
(leases, retries with the same webhook-id, giving up), with the receiver faked by httpx."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from sqlalchemy import select, update

from service import queue
from service.app import AppState
from service.auth.principal import Principal
from service.db.models import FineTuningJob, WebhookDelivery
from service.errors import InvalidRequestError, NotFoundError
from service.webhooks import repository
from service.webhooks.sender import WebhookSender
from service.webhooks.service import CreatedEndpoint, WebhooksService
from tests.integration.test_queue import expire_leases, new_job

SDK = openai.OpenAI(api_key="not-used")
SUCCEEDED, FAILED, CANCELLED = (
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
)
Handler = Callable[[httpx.Request], httpx.Response]


def add_endpoint(state: AppState, slug: str, *events: str) -> CreatedEndpoint:
    state.access.issue_key(slug)  # the project exists before its endpoint
    return WebhooksService(state.db).create(slug, f"https://{slug}.example/hooks", events)


def deliveries(state: AppState, endpoint: CreatedEndpoint) -> list[WebhookDelivery]:
    with state.db.read() as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint.endpoint.id)
                .order_by(WebhookDelivery.seq)
            )
        )


def events_of(rows: list[WebhookDelivery]) -> list[tuple[str, str]]:
    """(type, job id) per delivery, read from the payload that will be signed and sent."""
    return [(json.loads(r.payload)["type"], json.loads(r.payload)["data"]["id"]) for r in rows]


def running_job(state: AppState, slug: str) -> tuple[str, queue.Claim]:
    _, job_id = new_job(state, slug)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None and claim.job_id == job_id
    queue.advance(state.db, claim, "validating_files", "queued", "Files validated")
    queue.advance(state.db, claim, "queued", "running", "Fine-tuning job started")
    return job_id, claim


def succeed(state: AppState, claim: queue.Claim) -> None:
    """What the worker's final transaction does to the job's status."""
    with queue.held(state.db, claim, "running") as (_session, job):
        queue.transition(job, "succeeded")
        job.lease_owner = None


def test_every_way_a_job_ends_queues_its_event_for_each_subscribed_endpoint(
    state: AppState,
) -> None:
    everything = add_endpoint(state, "acme")
    successes = add_endpoint(state, "acme", SUCCEEDED)
    deleted = add_endpoint(state, "acme")
    WebhooksService(state.db).delete(deleted.endpoint.id)
    stranger = add_endpoint(state, "other")

    owner, cancelled = new_job(state, "acme")
    state.jobs.cancel(owner, cancelled)
    _, failed = new_job(state, "acme")
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None and claim.job_id == failed
    queue.fail(state.db, claim, "training_failed", "boom", None)
    lost, _claim = running_job(state, "acme")
    expire_leases(state)
    queue.reap_expired_leases(state.db, max_lost_leases=0)
    succeeded, claim = running_job(state, "acme")
    succeed(state, claim)

    assert events_of(deliveries(state, everything)) == [
        (CANCELLED, cancelled),
        (FAILED, failed),
        (FAILED, lost),
        (SUCCEEDED, succeeded),
    ]
    assert events_of(deliveries(state, successes)) == [(SUCCEEDED, succeeded)]
    assert deliveries(state, deleted) == [] and deliveries(state, stranger) == []
    rows = deliveries(state, everything)
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    assert all(r.id.startswith("wh_") and r.event_id.startswith("evt_") for r in rows)
    assert all(json.loads(r.payload)["id"] == r.event_id for r in rows)
    # One event, one evt_ id; each endpoint's delivery has its own webhook-id.
    assert rows[-1].event_id == deliveries(state, successes)[0].event_id
    assert rows[-1].id != deliveries(state, successes)[0].id


def test_no_event_without_the_status_change(state: AppState) -> None:
    everything = add_endpoint(state, "acme")
    owner, job_id = new_job(state, "acme")

    with pytest.raises(RuntimeError), state.db.write() as session:
        job = session.scalars(select(FineTuningJob).where(FineTuningJob.id == job_id)).one()
        queue.transition(job, "cancelled")
        raise RuntimeError("the transaction that ends the job fails")

    assert state.jobs.retrieve(owner, job_id).status == "validating_files"
    assert deliveries(state, everything) == []


class Receiver:
    """A fake receiver: answers with ``statuses`` in turn and keeps what it was sent."""

    def __init__(self, *statuses: int | type[Exception]) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(answer, type):
            raise answer("receiver unreachable")
        return httpx.Response(answer)


@pytest.fixture
def make_sender(state: AppState) -> Iterator[Callable[..., WebhookSender]]:
    senders: list[WebhookSender] = []

    def make(receiver: Handler, **settings: object) -> WebhookSender:
        changed = state.settings.model_copy(update={"webhook_retry_base_seconds": 0.0, **settings})
        sender = WebhookSender(state.db, changed, state.metrics, httpx.MockTransport(receiver))
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        asyncio.run(sender.aclose())


def cancelled_job(state: AppState, slug: str = "acme") -> tuple[Principal, str]:
    owner, job_id = new_job(state, slug)
    state.jobs.cancel(owner, job_id)
    return owner, job_id


def sent_count(state: AppState, result: str) -> float:
    value = state.metrics.registry.get_sample_value(
        "openft_webhook_deliveries_total", {"result": result}
    )
    return value or 0.0


def test_failed_attempts_are_retried_with_the_same_webhook_id_until_a_2xx(
    state: AppState, make_sender: Callable[..., WebhookSender]
) -> None:
    endpoint = add_endpoint(state, "acme")
    _, job_id = cancelled_job(state)
    receiver = Receiver(500, httpx.ConnectError, 204)
    sender = make_sender(receiver)

    assert [asyncio.run(sender.send_due()) for _ in range(4)] == [1, 1, 1, 0]

    (row,) = deliveries(state, endpoint)
    assert (row.status, row.attempts, row.delivered_at is not None) == ("delivered", 3, True)
    assert row.last_error == "ConnectError: receiver unreachable"
    assert {r.headers["webhook-id"] for r in receiver.requests} == {row.id}
    for request in receiver.requests:
        assert str(request.url) == "https://acme.example/hooks"
        assert request.headers["user-agent"] == "OpenFT-Webhooks/1.0"
        event = SDK.webhooks.unwrap(request.content, request.headers, secret=endpoint.secret)
        assert (event.type, event.data.id, event.id) == (CANCELLED, job_id, row.event_id)
    assert sent_count(state, "retrying") == 2 and sent_count(state, "delivered") == 1


def test_a_delivery_waits_for_its_backoff(
    state: AppState, make_sender: Callable[..., WebhookSender]
) -> None:
    endpoint = add_endpoint(state, "acme")
    cancelled_job(state)
    sender = make_sender(Receiver(503), webhook_retry_base_seconds=60.0)

    assert asyncio.run(sender.send_due()) == 1
    assert asyncio.run(sender.send_due()) == 0  # not due again for about a minute

    (row,) = deliveries(state, endpoint)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 503")
    assert row.next_attempt_at is not None
    assert 47 <= row.next_attempt_at - row.created_at <= 74  # 60 s +-20 %, whole seconds


def test_a_delivery_is_given_up_after_its_attempts(
    state: AppState, make_sender: Callable[..., WebhookSender]
) -> None:
    endpoint = add_endpoint(state, "acme")
    cancelled_job(state)
    receiver = Receiver(httpx.ConnectError)
    sender = make_sender(receiver, webhook_max_attempts=3)

    assert [asyncio.run(sender.send_due()) for _ in range(4)] == [1, 1, 1, 0]

    (row,) = deliveries(state, endpoint)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error == "ConnectError: receiver unreachable"
    assert len(receiver.requests) == 3 and sent_count(state, "failed") == 1


def test_a_deleted_endpoint_gets_nothing_more(
    state: AppState, make_sender: Callable[..., WebhookSender]
) -> None:
    endpoint = add_endpoint(state, "acme")
    cancelled_job(state)
    WebhooksService(state.db).delete(endpoint.endpoint.id)
    receiver = Receiver(200)

    asyncio.run(make_sender(receiver).send_due())

    (row,) = deliveries(state, endpoint)
    assert (row.status, row.last_error) == ("failed", "the endpoint was deleted")
    assert receiver.requests == []


def test_concurrent_senders_never_hold_the_same_delivery(state: AppState) -> None:
    add_endpoint(state, "acme")
    for _ in range(6):
        cancelled_job(state)
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while found := repository.claim_due(state.db, name, lease_s=60, limit=1):
            with lock:
                claimed.extend(d.id for d in found)

    threads = [threading.Thread(target=claimer, args=(f"api-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(claimed) == 6 and len(set(claimed)) == 6


def test_a_sender_whose_lease_expired_cannot_record_its_outcome(state: AppState) -> None:
    endpoint = add_endpoint(state, "acme")
    cancelled_job(state)
    (slow,) = repository.claim_due(state.db, "api-slow", lease_s=60, limit=10)
    with state.db.write() as session:  # the slow process's lease runs out
        session.execute(update(WebhookDelivery).values(lease_expires_at=0))
    (again,) = repository.claim_due(state.db, "api-other", lease_s=60, limit=10)

    repository.record(state.db, "api-slow", slow.id, repository.Outcome(delivered=False))
    repository.record(state.db, "api-other", again.id, repository.Outcome(delivered=True))

    (row,) = deliveries(state, endpoint)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 1, None)


def test_endpoints_need_a_project_an_http_url_and_known_events(state: AppState) -> None:
    webhooks = WebhooksService(state.db)
    state.access.issue_key("acme")

    with pytest.raises(NotFoundError):
        webhooks.create("nobody", "https://x.example/hooks")
    for url in ["ftp://x.example/hooks", "file:///etc/passwd", "https://", "x.example/hooks"]:
        with pytest.raises(InvalidRequestError):
            webhooks.create("acme", url)
    with pytest.raises(InvalidRequestError):
        webhooks.create("acme", "https://x.example/hooks", ["fine_tuning.job.started"])
    created = webhooks.create("acme", "http://127.0.0.1:9/hooks", [FAILED, FAILED])
    assert created.endpoint.event_types == (FAILED,)
    assert [e.id for e in webhooks.list("acme")] == [created.endpoint.id]
    webhooks.delete(created.endpoint.id)
    assert webhooks.list("acme") == []
    with pytest.raises(NotFoundError):
        webhooks.delete(created.endpoint.id)


def test_finished_deliveries_are_pruned_after_their_time(
    state: AppState, make_sender: Callable[..., WebhookSender]
) -> None:
    endpoint = add_endpoint(state, "acme")
    cancelled_job(state)
    cancelled_job(state)
    asyncio.run(make_sender(Receiver(200)).send_due())
    cancelled_job(state)
    old_delivered, recent_delivered, old_pending = (r.id for r in deliveries(state, endpoint))
    with state.db.write() as session:  # two of them are a month and a day old
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([old_delivered, old_pending]))
            .values(created_at=WebhookDelivery.created_at - 31 * 86400)
        )

    pruned = repository.prune_finished(state.db, int(time.time()) - 30 * 86400)

    assert pruned == 1
    assert [r.id for r in deliveries(state, endpoint)] == [recent_delivered, old_pending]
