"""The job queue on SQLite and PostgreSQL: claims, leases, guarded writes, transitions."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from service import job_records, queue
from service.app import AppState
from service.auth.principal import Principal
from service.db.clock import database_now
from service.db.models import FineTuningJob, FineTuningJobEvent
from service.errors import InvalidRequestError
from service.files.upload import ReceivedUpload
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
    expire_leases(state)
    reclaimed = queue.claim(state.db, "worker-b", lease_s=60)
    assert reclaimed is not None and reclaimed.attempt == 2
    assert queue.stop_reason(state.db, first) == "lost"
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

    assert queue.stop_reason(state.db, claim) == "lost"
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

    queue.release(state.db, claim, "handed over")

    assert state.jobs.retrieve(owner, job_id).status == "queued"
    again = queue.claim(state.db, "worker-b", lease_s=60)
    assert again is not None and again.job_id == job_id and again.status == "queued"
    assert lost_leases(state, job_id) == 0  # a graceful hand-over is not a lost lease


def expire_leases(state: AppState) -> None:
    """What time does to a dead worker's lease, without waiting for it."""
    with state.db.write() as session:
        session.execute(update(FineTuningJob).values(lease_expires_at=0))


def lost_leases(state: AppState, job_id: str) -> int:
    with state.db.read() as session:
        return session.scalars(
            select(FineTuningJob.lost_leases).where(FineTuningJob.id == job_id)
        ).one()


def running_job(state: AppState, worker: str = "worker-a") -> tuple[Principal, str, queue.Claim]:
    owner, job_id = new_job(state)
    claim = queue.claim(state.db, worker, lease_s=60)
    assert claim is not None
    queue.advance(state.db, claim, "validating_files", "queued", "Files validated")
    queue.advance(state.db, claim, "queued", "running", "Fine-tuning job started")
    return owner, job_id, claim


def test_leases_are_timed_by_the_database_clock(state: AppState) -> None:
    new_job(state)
    with state.db.read() as session:
        now = database_now(session)
    claim = queue.claim(state.db, "worker-a", lease_s=60)
    assert claim is not None

    with state.db.read() as session:
        expires = session.scalars(
            select(FineTuningJob.lease_expires_at).where(FineTuningJob.id == claim.job_id)
        ).one()
    assert expires is not None and 0 <= expires - 60 - now <= 2


def test_the_reaper_requeues_a_dead_workers_job_and_fails_it_past_the_bound(
    state: AppState,
) -> None:
    owner, job_id, _claim = running_job(state)

    assert queue.reap_expired_leases(state.db, max_lost_leases=1) == []
    expire_leases(state)
    assert queue.reap_expired_leases(state.db, max_lost_leases=1) == [job_id]

    assert state.jobs.retrieve(owner, job_id).status == "queued"
    assert lost_leases(state, job_id) == 1
    again = queue.claim(state.db, "worker-b", lease_s=60)
    assert again is not None and again.attempt == 2
    expire_leases(state)
    queue.reap_expired_leases(state.db, max_lost_leases=1)
    failed = state.jobs.retrieve(owner, job_id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "worker_lost"
    assert "stopped responding 2 times" in failed.error.message


def test_pause_takes_effect_at_once_and_resume_queues_again(state: AppState) -> None:
    owner, job_id, claim = running_job(state)

    paused = state.jobs.pause(owner, job_id)

    assert paused.status == "paused"
    assert queue.stop_reason(state.db, claim) == "pause"
    queue.let_go(state.db, claim)
    assert queue.claim(state.db, "worker-b", lease_s=60) is None  # paused jobs wait
    assert state.jobs.resume(owner, job_id).status == "queued"
    resumed = queue.claim(state.db, "worker-b", lease_s=60)
    assert resumed is not None and resumed.job_id == job_id
    with pytest.raises(InvalidRequestError, match="not paused"):
        state.jobs.resume(owner, job_id)
    messages = [e.message for e in state.jobs.events(owner, job_id, after=None, limit=3).data]
    assert messages[:2] == ["Fine-tuning job resumed", "Fine-tuning job paused"]


def test_finished_jobs_cannot_be_paused(state: AppState) -> None:
    owner, job_id = new_job(state)
    state.jobs.cancel(owner, job_id)

    with pytest.raises(InvalidRequestError, match="cancelled and cannot be paused"):
        state.jobs.pause(owner, job_id)


def test_metrics_events_and_checkpoints_are_kept_once_per_step(state: AppState) -> None:
    owner, job_id, claim = running_job(state)
    data = {"step": 3, "train_loss": 1.0, "total_steps": 9, "train_mean_token_accuracy": 0.5}

    for _ in range(2):  # a resumed run repeats the steps after its snapshot
        with queue.held(state.db, claim, "running") as (session, job):
            job_records.add_event(session, job, "Step 3/9: training loss=1.00", data=dict(data))
            job_records.add_checkpoint(session, job, 3, "ft:x:y::abc:ckpt-step-3", {"step": 3})

    events = state.jobs.events(owner, job_id, after=None, limit=50).data
    assert [e.data["step"] for e in events if e.type == "metrics"] == [3]
    assert [
        c.step_number for c in state.jobs.checkpoints(owner, job_id, after=None, limit=10).data
    ] == [3]
    with pytest.raises(IntegrityError), state.db.write() as session:
        session.add(
            FineTuningJobEvent(
                id="ftevent-dup", job_id=job_id, project_id=owner.project_id, created_at=0,
                level="info", message="dup", type="metrics", data={}, step=3,
            )
        )  # fmt: skip


def test_only_the_newest_checkpoints_are_kept(state: AppState) -> None:
    owner, job_id, claim = running_job(state)

    with queue.held(state.db, claim, "running") as (session, job):
        for step in (3, 6, 9, 12):
            job_records.add_checkpoint(session, job, step, f"ft:x:y::a:ckpt-step-{step}", {})
        removed = job_records.prune_checkpoints(session, job_id, keep=3)

    assert removed == [3]
    listed = state.jobs.checkpoints(owner, job_id, after=None, limit=2)
    assert [c.step_number for c in listed.data] == [12, 9] and listed.has_more
    assert listed.first_id == listed.data[0].id and listed.last_id == listed.data[1].id


def test_a_spared_checkpoint_outlives_the_newest_ones(state: AppState) -> None:
    _owner, job_id, claim = running_job(state)

    with queue.held(state.db, claim, "running") as (session, job):
        for step in (3, 6, 9, 12, 15):
            job_records.add_checkpoint(session, job, step, f"ft:x:y::a:ckpt-step-{step}", {})
        removed = job_records.prune_checkpoints(session, job_id, keep=3, spare=3)
        kept = [c.step for c in job_records.job_checkpoints(session, job_id)]

    assert (removed, kept) == ([6], [15, 12, 9, 3])


def test_events_are_found_by_how_they_begin_with_like_characters_taken_literally(
    state: AppState,
) -> None:
    _owner, job_id, claim = running_job(state)

    with queue.held(state.db, claim, "running") as (session, job):
        job_records.add_event(
            session, job, "Loss rose 5% (1.00 → 1.05): overfitting_", level="warn"
        )
        found = [
            job_records.has_event_starting(session, job_id, opening)
            for opening in ("Loss rose 5% (1.00", "Loss rose 5_", "Loss rose %", "Loss fell")
        ]

    assert found == [True, False, False, False]
