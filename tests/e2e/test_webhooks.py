"""Webhooks end to end: ``openft serve`` (API only) on SQLite and PostgreSQL sends signed
``fine_tuning.job.*`` events to real HTTP receivers set up with ``openft webhooks create``,
retries them, and never lets a receiver hold up a job or see another project's events."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import openai
import pytest
from sqlalchemy import select

from service import queue
from service.auth.service import AccessService, IssuedKey
from service.db.database import Database
from service.db.models import FineTuningJob, WebhookDelivery, WebhookEndpoint
from tests.support import postgres
from tests.support.ci import require
from tests.support.server import ServerProcess, openft_command, start_server
from tests.support.webhook_receiver import Received, running_receiver

VERIFIER = openai.OpenAI(api_key="not-used")
FAST_RETRIES = {
    "OPENFT_WEBHOOK_POLL_SECONDS": "0.2",
    "OPENFT_WEBHOOK_RETRY_BASE_SECONDS": "0",
    "OPENFT_WEBHOOK_TIMEOUT_SECONDS": "60",
}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def _database(kind: str) -> AbstractContextManager[str]:
    if kind == "sqlite":
        return nullcontext("")
    require(postgres.reachable(), f"PostgreSQL ({postgres.ADMIN_DSN})")
    return postgres.fresh_database("webhooks")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """An API-only server that retries webhooks at once (no backoff), on each database."""
    with _database(request.param) as url:
        env = {**FAST_RETRIES, **({"OPENFT_DATABASE_URL": url} if url else {})}
        workdir = tmp_path_factory.mktemp(f"webhooks-{request.param}")
        process = start_server(workdir, env, "--workers", "0", "--no-vllm")
        yield process
        process.stop()


@pytest.fixture(scope="module")
def server_db(server: ServerProcess) -> Iterator[Database]:
    database = Database(server.settings().database_url)
    yield database
    database.dispose()


@pytest.fixture
def new_project(server_db: Database) -> Callable[[], IssuedKey]:
    return lambda: AccessService(server_db).issue_key(f"wh-{secrets.token_hex(6)}")


@pytest.fixture
def client_for(
    server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> Callable[[IssuedKey], openai.OpenAI]:
    return lambda project: sdk(server.api_url, project.key)


def add_endpoint(server: ServerProcess, project: IssuedKey, url: str, *events: str) -> str:
    """``openft webhooks create`` on the server's database; returns the secret it prints."""
    options = [arg for event in events for arg in ("--events", event)]
    done = subprocess.run(
        [*openft_command(), "webhooks", "create", "--project", project.project_slug,
         "--url", url, *options],
        cwd=server.workdir, env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("whsec_") and secret not in done.stderr
    return secret


def new_job(client: openai.OpenAI) -> str:
    data = (json.dumps(CHAT) + "\n").encode() * 10
    training = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id).id


def verified(received: Received, secret: str) -> tuple[str, str]:
    """(type, job id) of a delivery whose signature the openai SDK accepts."""
    event = VERIFIER.webhooks.unwrap(received.body, received.headers, secret=secret)
    return event.type, event.data.id


def deliveries(
    server_db: Database, project: IssuedKey, url: str | None = None
) -> list[WebhookDelivery]:
    """The project's deliveries (to ``url`` only, if given), oldest first."""
    query = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.project_id == project.project_id)
        .order_by(WebhookDelivery.seq)
    )
    if url is not None:
        query = query.where(WebhookEndpoint.url == url)
    with server_db.read() as session:
        return list(session.scalars(query))


def all_are(status: str, rows: list[WebhookDelivery], count: int) -> bool:
    return len(rows) == count and all(r.status == status for r in rows)


def wait_until(check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def test_a_cancelled_job_is_retried_with_the_same_webhook_id_until_acknowledged(
    server: ServerProcess,
    server_db: Database,
    new_project: Callable[[], IssuedKey],
    client_for: Callable[[IssuedKey], openai.OpenAI],
) -> None:
    project = new_project()
    client = client_for(project)
    with running_receiver(500, 500, 200) as receiver:
        secret = add_endpoint(server, project, receiver.url)
        job_id = new_job(client)

        assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"

        attempts = receiver.wait_for(3)
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert attempts[0].headers["webhook-id"].startswith("wh_")
    assert all(a.headers["user-agent"] == "OpenFT-Webhooks/1.0" for a in attempts)
    assert {a.body for a in attempts} == {attempts[0].body}  # the same event each time
    assert [verified(a, secret) for a in attempts] == [("fine_tuning.job.cancelled", job_id)] * 3
    body = json.loads(attempts[-1].body)
    assert body["object"] == "event" and body["id"].startswith("evt_")
    wait_until(lambda: all_are("delivered", deliveries(server_db, project), 1))
    (row,) = deliveries(server_db, project)
    assert (row.id, row.attempts, row.last_error) == (
        attempts[0].headers["webhook-id"],
        3,
        "HTTP 500",
    )


def test_failed_and_succeeded_jobs_reach_the_endpoints_that_asked_for_them(
    server: ServerProcess,
    server_db: Database,
    new_project: Callable[[], IssuedKey],
    client_for: Callable[[IssuedKey], openai.OpenAI],
) -> None:
    project = new_project()
    client = client_for(project)
    with running_receiver() as everything, running_receiver() as successes:
        secret = add_endpoint(server, project, everything.url)
        success_secret = add_endpoint(server, project, successes.url, "fine_tuning.job.succeeded")
        failing, succeeding = new_job(client), new_job(client)

        # Failed through the API: its training file is deleted while it waits.
        client.files.delete(client.fine_tuning.jobs.retrieve(failing).training_file)
        # Succeeded as the worker's final transaction does it (no training here).
        with server_db.write() as session:
            job = session.scalars(select(FineTuningJob).where(FineTuningJob.id == succeeding)).one()
            for status in ("queued", "running", "succeeded"):
                queue.transition(job, status)

        got = sorted(verified(r, secret) for r in everything.wait_for(2))
        (success,) = successes.wait_for(1)
    assert got == [("fine_tuning.job.failed", failing), ("fine_tuning.job.succeeded", succeeding)]
    assert verified(success, success_secret) == ("fine_tuning.job.succeeded", succeeding)
    assert len(everything.received) == 2 and len(successes.received) == 1
    assert client.fine_tuning.jobs.retrieve(failing).status == "failed"


def test_a_hanging_or_dead_receiver_holds_up_neither_jobs_nor_other_receivers(
    server: ServerProcess,
    server_db: Database,
    new_project: Callable[[], IssuedKey],
    client_for: Callable[[IssuedKey], openai.OpenAI],
) -> None:
    project = new_project()
    client = client_for(project)
    with running_receiver() as hanging, running_receiver() as healthy:
        hanging.hold()
        add_endpoint(server, project, hanging.url)
        secret = add_endpoint(server, project, healthy.url)
        with running_receiver() as gone:
            dead_url = gone.url  # nothing listens there once this block ends
        add_endpoint(server, project, dead_url)
        first, second = new_job(client), new_job(client)

        client.fine_tuning.jobs.cancel(first)
        hanging.wait_for(1)  # the sender has a request in flight that gets no answer
        assert client.fine_tuning.jobs.cancel(second).status == "cancelled"
        assert client.fine_tuning.jobs.retrieve(second).status == "cancelled"
        got = [verified(r, secret) for r in healthy.wait_for(2)]
        assert sorted(got) == sorted(
            [("fine_tuning.job.cancelled", first), ("fine_tuning.job.cancelled", second)]
        )
        # Both deliveries to the hanging receiver are still in flight, unanswered.
        held = deliveries(server_db, project, hanging.url)
        assert [(r.status, r.attempts) for r in held] == [("pending", 0)] * 2
        wait_until(lambda: all_are("failed", deliveries(server_db, project, dead_url), 2))
        hanging.release()
        wait_until(lambda: all_are("delivered", deliveries(server_db, project, hanging.url), 2))
    dead = deliveries(server_db, project, dead_url)
    # No backoff in this server: 18 refused connections each, then given up.
    assert all(r.attempts == 18 and (r.last_error or "").startswith("ConnectError") for r in dead)


def test_another_projects_endpoint_never_receives_this_projects_events(
    server: ServerProcess,
    server_db: Database,
    new_project: Callable[[], IssuedKey],
    client_for: Callable[[IssuedKey], openai.OpenAI],
) -> None:
    mine, theirs = new_project(), new_project()
    with running_receiver() as my_receiver, running_receiver() as their_receiver:
        my_secret = add_endpoint(server, mine, my_receiver.url)
        their_secret = add_endpoint(server, theirs, their_receiver.url)
        my_job, their_job = new_job(client_for(mine)), new_job(client_for(theirs))

        client_for(mine).fine_tuning.jobs.cancel(my_job)
        client_for(theirs).fine_tuning.jobs.cancel(their_job)

        (to_me,) = my_receiver.wait_for(1)
        (to_them,) = their_receiver.wait_for(1)
    assert verified(to_me, my_secret) == ("fine_tuning.job.cancelled", my_job)
    assert verified(to_them, their_secret) == ("fine_tuning.job.cancelled", their_job)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verified(to_me, their_secret)
    assert [json.loads(r.payload)["data"]["id"] for r in deliveries(server_db, mine)] == [my_job]
    assert len(my_receiver.received) == 1 and len(their_receiver.received) == 1


def test_two_api_processes_send_each_event_once(
    tmp_path_factory: pytest.TempPathFactory, sdk: Callable[..., openai.OpenAI]
) -> None:
    """Both processes run a sender on one PostgreSQL database; leases keep them apart."""
    require(postgres.reachable(), f"PostgreSQL ({postgres.ADMIN_DSN})")
    with postgres.fresh_database("webhooks_api2") as url:
        server = start_server(
            tmp_path_factory.mktemp("webhooks-api-processes"),
            {**FAST_RETRIES, "OPENFT_DATABASE_URL": url},
            *("--api-workers", "2", "--workers", "0", "--no-vllm"),
        )
        database = Database(url)
        try:
            project = AccessService(database).issue_key("two-processes")
            client = sdk(server.api_url, project.key)
            with running_receiver() as receiver:
                add_endpoint(server, project, receiver.url)
                jobs = [new_job(client) for _ in range(8)]
                for job_id in jobs:
                    client.fine_tuning.jobs.cancel(job_id)
                wait_until(lambda: all_are("delivered", deliveries(database, project), len(jobs)))
                received = receiver.wait_for(len(jobs))
            rows = deliveries(database, project)
        finally:
            database.dispose()
            server.stop()
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(r.id for r in rows)
    assert len(receiver.received) == len(jobs) and all(r.attempts == 1 for r in rows)


def test_batches_that_end_reach_the_endpoints_that_asked_for_them(
    server: ServerProcess,
    new_project: Callable[[], IssuedKey],
    client_for: Callable[[IssuedKey], openai.OpenAI],
) -> None:
    project = new_project()
    client = client_for(project)
    line = {
        "custom_id": "only", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    }  # fmt: skip
    with running_receiver() as receiver, running_receiver() as jobs_only:
        secret = add_endpoint(server, project, receiver.url, "batch.completed", "batch.failed")
        add_endpoint(server, project, jobs_only.url, "fine_tuning.job.succeeded")
        unreadable = client.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
        readable = client.files.create(
            file=("one.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch"
        )
        failing, completing = (
            client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            for file in (unreadable, readable)
        )
        got = sorted(verified(r, secret) for r in receiver.wait_for(2))
    # A batch whose every line failed (a 404 in its error file) still completed, as on OpenAI.
    assert got == sorted([("batch.failed", failing), ("batch.completed", completing)])
    assert client.batches.retrieve(completing).request_counts.failed == 1
    assert jobs_only.received == []
