"""Faults the service must ride out: PostgreSQL restarted under load, a full disk under the blob
store, and an S3 that cannot be reached. Each ends in OpenAI's error envelope with a 503 (never a
hang or a traceback), keeps nothing half-written, loses or repeats no job, and recovers."""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from service import job_records, queue
from service.app import build_state, create_app
from service.auth.principal import Principal
from service.auth.service import AccessService
from service.db import migrate
from service.db.database import Database
from service.db.models import FineTuningJob, FineTuningJobEvent
from service.errors import ServiceUnavailableError
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
from service.settings import Settings
from tests.support import private_postgres, seaweedfs
from tests.support.ci import require
from tests.support.tcp_proxy import TcpProxy

# Starlette's TestClient answers with httpx2's Response where installed, else httpx's.
Response = Any
CHAT = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
LEASE_S = 5
WORKER_LOST_DB = "lost the database or the blob store"


@contextmanager
def api(settings: Settings, slug: str = "faults") -> Iterator[TestClient]:
    """The API in-process over a migrated database, with a key of project ``slug``."""
    database = Database(settings.database_url)
    migrate.upgrade(database)
    key = AccessService(database).issue_key(slug).key
    database.dispose()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["authorization"] = f"Bearer {key}"
        yield client


def upload(client: TestClient, content: bytes = CHAT * 10) -> Response:
    return client.post(
        "/v1/files", files={"file": ("train.jsonl", content)}, data={"purpose": "fine-tune"}
    )


def assert_unavailable(response: Response, words: str) -> None:
    """OpenAI's envelope, a 503 the SDKs retry, and no internals in the message."""
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and words in error["message"]
    assert "Traceback" not in response.text and "psycopg" not in response.text
    assert int(response.headers["retry-after"]) > 0


def door_chat(i: int) -> bytes:
    row = {
        "messages": [
            {"role": "user", "content": f"What is the code for door {i}?"},
            {"role": "assistant", "content": f"The code for door {i} is {1000 + i}."},
        ]
    }
    return (json.dumps(row) + "\n").encode()


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- PostgreSQL restarted while jobs are created, claimed and completed -----------------------


@pytest.fixture(scope="module")
def private_pg() -> Iterator[private_postgres.PrivateServer]:
    require(private_postgres.available(), "PostgreSQL's initdb and pg_ctl (and runuser as root)")
    with private_postgres.private_postgres() as server:
        yield server


class Claimer(threading.Thread):
    """A stand-in for a worker: claims jobs and walks them to succeeded, riding out errors."""

    def __init__(self, url: str, name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.db = Database(url)
        self.stop = stop
        self.claims: list[tuple[str, int]] = []
        self.completed: list[str] = []
        self.interrupted: set[str] = set()  # jobs this claimer held when the database went
        self.errors = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                claim = queue.claim(self.db, self.name, lease_s=LEASE_S)
            except ServiceUnavailableError:
                self.errors += 1
                time.sleep(0.05)
                continue
            if claim is None:
                time.sleep(0.02)
                continue
            self.claims.append((claim.job_id, claim.attempt))
            try:
                self.work(claim)
            except (ServiceUnavailableError, queue.LeaseLostError):
                self.errors += 1
                self.interrupted.add(claim.job_id)
        self.db.dispose()

    def work(self, claim: queue.Claim) -> None:
        if claim.status == "validating_files":
            queue.advance(self.db, claim, "validating_files", "queued", "Files validated")
        queue.advance(self.db, claim, "queued", "running", "Fine-tuning job started")
        with queue.held(self.db, claim, "running") as (session, job):
            queue.transition(job, "succeeded")
            job.fine_tuned_model = f"ft:tiny-chat:faults::{job.id[-8:]}"
            job.finished_at = int(time.time())
            job.lease_owner = None
            job_records.add_event(session, job, f"Completed by {self.name}")
        self.completed.append(claim.job_id)


class Creator(threading.Thread):
    """A client creating jobs through the API one after another, keeping every answer."""

    def __init__(self, client: TestClient, training_file: str, stop: threading.Event) -> None:
        super().__init__(name="creator", daemon=True)
        self.client, self.training_file, self.stop = client, training_file, stop
        self.responses: list[Response] = []

    def run(self) -> None:
        body = {"model": "tiny-chat", "training_file": self.training_file}
        while not self.stop.is_set():
            self.responses.append(self.client.post("/v1/fine_tuning/jobs", json=body))
            time.sleep(0.01)

    def created(self) -> list[str]:
        return [r.json()["id"] for r in self.responses if r.status_code == 200]

    def refused(self) -> list[Response]:
        return [r for r in self.responses if r.status_code != 200]


def test_a_postgresql_restart_under_load_loses_and_repeats_no_job(
    private_pg: private_postgres.PrivateServer, tmp_path: Path
) -> None:
    url = private_pg.create_database("restart_under_load")
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    stop_claimers, stop_creating = threading.Event(), threading.Event()
    claimers = [Claimer(url, f"claimer-{i}", stop_claimers) for i in range(3)]
    reaped: set[str] = set()
    stored: dict[str, str] = {}
    with api(settings) as client:
        training = upload(client).json()["id"]
        creator = Creator(client, training, stop_creating)
        for thread in [creator, *claimers]:
            thread.start()
        wait_until(lambda: sum(len(c.completed) for c in claimers) >= 4, "the first completions")

        private_pg.stop("fast")
        wait_until(lambda: len(creator.refused()) >= 2, "the API to refuse jobs while it is down")
        wait_until(lambda: all(c.errors for c in claimers), "every claimer to meet the outage")
        during = [client.get("/v1/fine_tuning/jobs"), upload(client)]
        created_before = len(creator.created())
        private_pg.start()
        wait_until(lambda: len(creator.created()) >= created_before + 4, "jobs created again")
        stop_creating.set()
        creator.join(timeout=30)
        created = creator.created()

        def all_succeeded() -> bool:
            reaped.update(queue.reap_expired_leases(claimers[0].db, max_lost_leases=1000))
            with claimers[0].db.read() as session:
                jobs = dict(session.execute(select(FineTuningJob.id, FineTuningJob.status)).all())
            stored.update(jobs)
            return set(jobs.values()) == {"succeeded"}

        wait_until(all_succeeded, "every job to succeed after the restart")
        files = client.get("/v1/files").json()["data"]
        stop_claimers.set()
    for claimer in claimers:
        claimer.join(timeout=30)

    for response in [*creator.refused(), *during]:
        assert_unavailable(response, "The database is not reachable right now")
    with Database(url).read() as session:
        completions = Counter(
            session.scalars(
                select(FineTuningJobEvent.job_id).where(
                    FineTuningJobEvent.message.like("Completed by %")
                )
            )
        )
    # A create whose commit raced the shutdown may exist although its client got a 503 (it
    # would retry, with an Idempotency-Key); either way every stored job completes once.
    assert set(created) <= set(stored), "a job the API confirmed was lost"
    assert completions == Counter(set(stored)), "every job completed exactly once"
    finished = [job for c in claimers for job in c.completed]
    assert len(finished) == len(set(finished)) and set(finished) <= set(stored)
    claims = [claim for c in claimers for claim in c.claims]
    assert len(claims) == len(set(claims)), "a job was handed out twice under one lease"
    handed_out_again = {job for job, n in Counter(j for j, _ in claims).items() if n > 1}
    lost_holders = set().union(*(c.interrupted for c in claimers), reaped)
    assert handed_out_again <= lost_holders, "a job was re-claimed while its holder still had it"
    assert [f["id"] for f in files] == [training], "the upload during the outage left no file"


def test_connections_the_server_closed_while_idle_are_replaced_before_use(
    private_pg: private_postgres.PrivateServer,
) -> None:
    """No pre-ping round trip, yet the first request after a restart is served: the pool sees
    at checkout that the server closed its idle connections and opens fresh ones."""
    db = Database(private_pg.create_database("closed_while_idle"))
    try:
        with db.read() as session:  # the pool now holds a connection
            assert session.execute(text("SELECT 1")).scalar_one() == 1
        private_pg.stop("fast")
        private_pg.start()
        with db.read() as session:
            assert session.execute(text("SELECT 2")).scalar_one() == 2
        with db.write_one() as session:  # the one-statement path checks out the same way
            assert session.execute(text("SELECT 3")).scalar_one() == 3
    finally:
        db.dispose()


def test_a_training_worker_rides_out_a_postgresql_restart(
    private_pg: private_postgres.PrivateServer, tmp_path: Path
) -> None:
    """A real worker mid-training: the job resumes from its snapshot and succeeds, and the
    worker process keeps running (it neither fails the job nor exits)."""
    require(
        all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
        "the training stack (torch, transformers, peft)",
    )
    from trainer.demo_model import create_demo_model

    url = private_pg.create_database("worker_restart")
    data_dir = tmp_path / "data"
    create_demo_model(data_dir / "models" / "tiny-chat")
    state = build_state(Settings(data_dir=data_dir, database_url=url))
    migrate.upgrade(state.db)
    issued = state.access.issue_key("worker")
    owner = Principal(issued.project_id, issued.project_slug, issued.key_id)
    blob = state.blobs.stage()
    blob.write(b"".join(door_chat(i) for i in range(12)))
    training = state.files.create(
        owner, ReceivedUpload(fields={"purpose": "fine-tune"}, filename="t.jsonl", blob=blob)
    )
    job_id = state.jobs.create(
        owner,
        CreateJobRequest(
            model="tiny-chat", training_file=training.id, seed=7,
            hyperparameters={"n_epochs": 3, "batch_size": 2},
        ),
    ).id  # fmt: skip
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_DATABASE_URL": url,
        "OPENFT_SNAPSHOT_EVERY_STEPS": "2", "OPENFT_WORKER_POLL_SECONDS": "0.2",
        "OPENFT_LEASE_SECONDS": "5",
    }  # fmt: skip
    env.pop("OPENFT_FAULT", None)

    def steps() -> int:
        with state.db.read() as session:
            events = session.scalars(
                select(FineTuningJobEvent.step).where(
                    FineTuningJobEvent.job_id == job_id, FineTuningJobEvent.type == "metrics"
                )
            ).all()
        return max((s for s in events if s is not None), default=0)

    def status() -> str:
        return state.jobs.retrieve(owner, job_id).status

    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "trainer.worker"], env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: steps() >= 4, "the worker to train a few steps", timeout_s=240)
            private_pg.stop("fast")
            wait_until(lambda: WORKER_LOST_DB in log_path.read_text(), "the worker to notice")
            private_pg.start()
            wait_until(lambda: status() in ("succeeded", "failed", "cancelled"), "the job to end")
            still_running = worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            state.db.dispose()

    with Database(url).read() as session:
        messages = session.scalars(
            select(FineTuningJobEvent.message).where(FineTuningJobEvent.job_id == job_id)
        ).all()
    assert status() == "succeeded", log_path.read_text()[-3000:]
    assert still_running, log_path.read_text()[-3000:]
    handed_back = {  # by the worker, or by the reaper once its lease ran out
        "The job is queued to resume after a storage outage",
        "The worker stopped responding; the job is queued to resume",
    }
    assert handed_back & set(messages), messages


# --- A full disk under the local blob store ---------------------------------------------------


class FullDisk:
    """Files opened in one folder share ``free`` bytes, and fail as the kernel does once it is
    spent: the write that crosses it is short, the next raises ENOSPC (at write, flush or close,
    wherever Python's buffering happens to send the bytes)."""

    def __init__(self, folder: Path, free: int) -> None:
        self.folder = folder
        self.free = free

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open = Path.open

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if path.parent != self.folder or "b" not in mode or "r" in mode:
                return real_open(path, mode, *args, **kwargs)
            return io.BufferedWriter(_FullDiskFile(io.FileIO(path, mode.replace("b", "")), self))

        monkeypatch.setattr(Path, "open", open_)


class _FullDiskFile(io.RawIOBase):
    def __init__(self, raw: io.FileIO, disk: FullDisk) -> None:
        self.raw, self.disk = raw, disk

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.disk.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.raw.write(bytes(data)[: self.disk.free])
        self.disk.free -= written
        return written

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def test_a_full_disk_fails_uploads_cleanly_keeps_nothing_and_the_next_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    staging, files_dir = settings.blob_root / ".staging", settings.blob_root / "files"
    disk = FullDisk(staging, free=300_000)
    with api(settings) as client:
        disk.install(monkeypatch)
        big = CHAT * 20_000  # about 1.8 MB: more than the disk has left
        upload_id = client.post(
            "/v1/uploads",
            json={"filename": "t.jsonl", "purpose": "fine-tune", "bytes": len(big),
                  "mime_type": "text/jsonl"},
        ).json()["id"]  # fmt: skip

        refused = [upload(client, big)]  # fails in a write
        disk.free = 0
        refused.append(upload(client))  # small enough to be buffered: fails at commit's flush
        refused.append(client.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("p", big)}))
        leftovers = sorted(p.name for p in staging.iterdir())
        listed = client.get("/v1/files").json()["data"]
        disk.free = len(big) + 1000  # room for the part, not for joining it into a file
        part = client.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("p", big)})
        join = {"part_ids": [part.json()["id"]]}
        refused.append(client.post(f"/v1/uploads/{upload_id}/complete", json=join))
        leftovers += sorted(p.name for p in staging.iterdir())
        disk.free = 10**9  # the operator made room
        completed = client.post(f"/v1/uploads/{upload_id}/complete", json=join)  # still pending
        stored = upload(client)
        content = client.get(f"/v1/files/{stored.json()['id']}/content").content

    for response in refused:
        assert_unavailable(response, "The file store is out of space")
    assert leftovers == [] and listed == []
    assert part.status_code == 200 and completed.json()["status"] == "completed", completed.text
    assert stored.status_code == 200 and content == CHAT * 10
    assert sorted(p.name for p in files_dir.iterdir()) == sorted(
        [stored.json()["id"], completed.json()["file"]["id"]]
    )


# --- S3 out of space, and S3 unreachable -------------------------------------------------------


def s3_settings(tmp_path: Path, endpoint: str, server: seaweedfs.S3Server) -> Settings:
    env = server.settings_env(f"faults-{tmp_path.name}")
    return Settings(
        data_dir=tmp_path / "data",
        blob_url=env["OPENFT_BLOB_URL"],
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id=env["OPENFT_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=env["OPENFT_S3_SECRET_ACCESS_KEY"],
        s3_max_attempts=2,
    )


def s3_objects(server: seaweedfs.S3Server, prefix: str) -> list[str]:
    client: Any = server.client()
    listed = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix)
    uploads = client.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])] + [
        u["Key"] for u in uploads.get("Uploads", [])
    ]


def test_a_full_s3_fails_uploads_cleanly_keeps_nothing_and_the_next_works(
    s3_server: seaweedfs.S3Server, tmp_path: Path
) -> None:
    settings = s3_settings(tmp_path, s3_server.endpoint_url, s3_server)
    prefix = settings.blob_url.removeprefix(f"s3://{s3_server.bucket}/")
    full = {"on": True}

    def storage_full(**_: Any) -> tuple[Any, dict[str, Any]] | None:
        # What MinIO answers when its drives are full (SeaweedFS has no such answer).
        if not full["on"]:
            return None
        error = {"Code": "XMinioStorageFull", "Message": "Storage backend has reached its limit"}
        return (
            SimpleNamespace(status_code=507),
            {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 507}},
        )

    with api(settings) as client:
        events = client.app.state.openft.blobs.client.meta.events  # type: ignore[attr-defined]
        for operation in ("PutObject", "UploadPart"):
            events.register(f"before-call.s3.{operation}", storage_full)
        refused = [upload(client), upload(client, CHAT * 200_000)]  # one PUT; a multipart upload
        leftovers = s3_objects(s3_server, f"{prefix}/")
        listed = client.get("/v1/files").json()["data"]
        full["on"] = False
        stored = upload(client)
        content = client.get(f"/v1/files/{stored.json()['id']}/content").content

    for response in refused:
        assert_unavailable(response, "The file store is out of space")
    assert leftovers == [] and listed == []
    assert stored.status_code == 200 and content == CHAT * 10


def test_an_unreachable_s3_gives_a_503_after_bounded_retries_and_recovers(
    s3_server: seaweedfs.S3Server, tmp_path: Path
) -> None:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(tmp_path, proxy.url, s3_server)
    attempts: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        attempts[event_name.rsplit(".", 1)[-1]] += 1

    try:
        with api(settings) as client:
            client.app.state.openft.blobs.client.meta.events.register(  # type: ignore[attr-defined]
                "before-send.s3", count
            )
            kept = upload(client).json()["id"]
            proxy.down()
            attempts.clear()
            refused = [upload(client), client.get(f"/v1/files/{kept}/content")]
            tries = dict(attempts)
            listed = [f["id"] for f in client.get("/v1/files").json()["data"]]
            proxy.up()
            stored = upload(client)
            content = client.get(f"/v1/files/{kept}/content").content
    finally:
        proxy.down()

    for response in refused:
        assert_unavailable(response, "The file store cannot be reached")
    assert tries == {"PutObject": 2, "GetObject": 2}, "each call tried s3_max_attempts times"
    assert listed == [kept], "the refused upload left no file"
    assert stored.status_code == 200 and content == CHAT * 10


def test_an_s3_that_never_answers_gives_a_503_after_bounded_retries(
    s3_server: seaweedfs.S3Server, tmp_path: Path
) -> None:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(tmp_path, proxy.url, s3_server).model_copy(
        update={"s3_read_timeout_seconds": 1.0}
    )
    attempts: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        attempts[event_name.rsplit(".", 1)[-1]] += 1

    try:
        with api(settings) as client:
            client.app.state.openft.blobs.client.meta.events.register(  # type: ignore[attr-defined]
                "before-send.s3", count
            )
            proxy.stall()
            refused = upload(client)
            tries = dict(attempts)
            proxy.up()
            stored = upload(client)
    finally:
        proxy.down()

    assert_unavailable(refused, "The file store cannot be reached")
    assert tries == {"PutObject": 2}
    assert stored.status_code == 200, stored.text
