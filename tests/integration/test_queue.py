"""The job queue on SQLite and PostgreSQL: claims, leases, guarded writes, transitions."""

from __future__ import annotations

import threading
import time
from unittest import mock

import pytest

from service.auth.service import Principal
from service.deps import AppState
from service.files.upload import ReceivedUpload
from service.jobs import queue
from service.jobs.schemas import CreateJobRequest

CHAT = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


def new_job(state: AppState, slug: str = "queue") -> tuple[Principal, str]:
    issued = state.access.issue_key(slug)
    owner = Principal(issued.project_id, issued.project_slug, issued.key_id)
    blob = state.blobs.stage()
    blob.write(CHAT * 10)
    upload = ReceivedUpload(fields={"purpose": "fine-tune"}, filename="t.jsonl", blob=blob)
    training = state.files.create(owner, upload)
    request = CreateJobRequest(model="tiny-chat", training_file=training.id)
    return owner, state.jobs.create(owner, request).id


def test_a_job_is_claimed_once_and_its_lease_can_expire(state: AppState) -> None:
    _, job_id = new_job(state)

    first = queue.claim(state.db, "worker-a", lease_s=60)
    second = queue.claim(state.db, "worker-b", lease_s=60)

    assert first is not None and first.job_id == job_id and first.attempt == 1
    assert first.project_slug == "queue"
    assert second is None
    with mock.patch("service.jobs.queue.time.time", return_value=time.time() + 120):
        reclaimed = queue.claim(state.db, "worker-b", lease_s=60)
    assert reclaimed is not None and reclaimed.attempt == 2
    assert not queue.still_ours(state.db, first)
    with pytest.raises(queue.LeaseLostError):
        queue.advance(state.db, first, "validating_files", "queued", "stale write")


def test_concurrent_claimers_never_share_a_job(state: AppState) -> None:
    jobs = {new_job(state, f"p{i}")[1] for i in range(6)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (found := queue.claim(state.db, name, lease_s=60)) is not None:
            with lock:
                claimed.append(found.job_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed) == sorted(jobs)


def test_a_cancelled_job_is_never_overwritten_by_its_worker(state: AppState) -> None:
    owner, job_id = new_job(state)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None
    queue.advance(state.db, claim, "validating_files", "queued", "Files validated")

    state.jobs.cancel(owner, job_id)

    assert not queue.still_ours(state.db, claim)
    with pytest.raises(queue.LeaseLostError):
        queue.advance(state.db, claim, "queued", "running", "Fine-tuning job started")
    queue.fail(state.db, claim, "training_failed", "too late", None)
    assert state.jobs.retrieve(owner, job_id).status == "cancelled"


def test_only_lifecycle_transitions_are_allowed(state: AppState) -> None:
    _, _job_id = new_job(state)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None

    with pytest.raises(queue.InvalidTransitionError):
        queue.advance(state.db, claim, "validating_files", "succeeded", "skipping ahead")


def test_failing_records_openai_error_and_an_error_event(state: AppState) -> None:
    owner, job_id = new_job(state)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None

    queue.fail(
        state.db, claim, "invalid_n_examples", "Training file has 3 example(s)", "training_file"
    )

    job = state.jobs.retrieve(owner, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error.model_dump() == {  # type: ignore[union-attr]
        "code": "invalid_n_examples",
        "message": "Training file has 3 example(s)",
        "param": "training_file",
    }
    newest = state.jobs.events(owner, job_id, after=None, limit=1).data[0]
    assert (newest.level, newest.message) == ("error", "Training file has 3 example(s)")


def test_release_puts_a_running_job_back_in_the_queue(state: AppState) -> None:
    owner, job_id = new_job(state)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None
    queue.advance(state.db, claim, "validating_files", "queued", "Files validated")
    queue.advance(state.db, claim, "queued", "running", "Fine-tuning job started")

    queue.release(state.db, claim)

    assert state.jobs.retrieve(owner, job_id).status == "queued"
    again = queue.claim(state.db, "worker-b", lease_s=60)
    assert again is not None and again.job_id == job_id and again.status == "queued"
