"""Real worker processes against a real database: killed, stopped, paused, and run side by side.

Each worker is ``python -m trainer.worker`` on the demo model. Faults are injected at named points
(``OPENFT_FAULT``), and time passing for a dead worker's lease is simulated by expiring it in the
database, so nothing here sleeps for a lease. Data-parallel jobs (two training processes over
gloo) give the single process's loss curve, and a killed leader leaves no follower behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from service.app import AppState, build_state
from service.auth.principal import Principal
from service.blobstore.keys import snapshot_prefix
from service.db import migrate
from service.db.models import FineTuningJob, FineTuningJobEvent
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
from service.settings import Settings
from tests.support import postgres
from tests.support.ci import require
from trainer.demo_model import create_demo_model

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT_EVERY = 4
SMALL = {"n_epochs": 3, "batch_size": 2}  # 12 examples: 6 steps an epoch, 18 in all
WORKER_TIMEOUT_S = 300


def chat(i: int) -> bytes:
    row = {
        "messages": [
            {"role": "user", "content": f"What is the code for door {i}?"},
            {"role": "assistant", "content": f"The code for door {i} is {i * 7919 % 10000}."},
        ]
    }
    return json.dumps(row).encode() + b"\n"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    create_demo_model(folder / "tiny-chat")
    return folder


@dataclass
class Queue:
    """A database, a blob folder and the service over them, plus a way to start workers."""

    state: AppState
    env: dict[str, str]
    owner: Principal

    def create_job(self, n_examples: int = 12, seed: int = 7, **hyper: Any) -> str:
        blob = self.state.blobs.stage()
        blob.write(b"".join(chat(i) for i in range(n_examples)))
        upload = ReceivedUpload(fields={"purpose": "fine-tune"}, filename="t.jsonl", blob=blob)
        training = self.state.files.create(self.owner, upload)
        request = CreateJobRequest(
            model="tiny-chat",
            training_file=training.id,
            seed=seed,
            hyperparameters=hyper or SMALL,
        )
        return self.state.jobs.create(self.owner, request).id

    def worker(self, *args: str, fault: str | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **({"OPENFT_FAULT": fault} if fault else {})}
        return subprocess.Popen(
            [sys.executable, "-m", "trainer.worker", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def run_worker(self, fault: str | None = None) -> tuple[int, str]:
        process = self.worker("--once", fault=fault)
        output, _ = process.communicate(timeout=WORKER_TIMEOUT_S)
        return process.returncode, output.decode(errors="replace")

    def job(self, job_id: str) -> FineTuningJob:
        with self.state.db.read() as session:
            row = session.scalars(select(FineTuningJob).where(FineTuningJob.id == job_id)).one()
            session.expunge(row)
            return row

    def events(self, job_id: str) -> list[FineTuningJobEvent]:
        with self.state.db.read() as session:
            rows = list(
                session.scalars(
                    select(FineTuningJobEvent)
                    .where(FineTuningJobEvent.job_id == job_id)
                    .order_by(FineTuningJobEvent.seq)
                )
            )
            session.expunge_all()
            return rows

    def losses(self, job_id: str) -> list[tuple[int, float]]:
        metrics = [e for e in self.events(job_id) if e.type == "metrics"]
        return [(e.data["step"], e.data["train_loss"]) for e in metrics if e.data]

    def expire_leases(self) -> None:
        with self.state.db.write() as session:
            session.execute(
                update(FineTuningJob)
                .where(FineTuningJob.lease_owner.is_not(None))
                .values(lease_expires_at=0)
            )

    def snapshots(self, job_id: str) -> list[str]:
        return list(self.state.blobs.keys(snapshot_prefix(job_id)))

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


def make_queue(database_url: str, data_dir: Path, models_dir: Path) -> Iterator[Queue]:
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny-chat").symlink_to(models_dir / "tiny-chat")
    state = build_state(Settings(data_dir=data_dir, database_url=database_url))
    migrate.upgrade(state.db)
    issued = state.access.issue_key("recovery")
    env = {
        **os.environ,
        "OPENFT_DATA_DIR": str(data_dir),
        "OPENFT_DATABASE_URL": database_url,
        "OPENFT_SNAPSHOT_EVERY_STEPS": str(SNAPSHOT_EVERY),
        "OPENFT_WORKER_POLL_SECONDS": "0.2",
    }
    env.pop("OPENFT_FAULT", None)
    yield Queue(state, env, Principal(issued.project_id, issued.project_slug, issued.key_id))
    state.db.dispose()


@pytest.fixture(scope="module")
def sqlite_queue(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Queue]:
    data_dir = tmp_path_factory.mktemp("recovery")
    yield from make_queue(f"sqlite:///{data_dir / 'openft.db'}", data_dir / "data", models_dir)


@pytest.fixture(scope="module")
def reference(sqlite_queue: Queue) -> list[tuple[int, float]]:
    """The loss curve of an uninterrupted run, for the interrupted ones to match."""
    job_id = sqlite_queue.create_job()
    code, output = sqlite_queue.run_worker()
    assert code == 0, output
    assert sqlite_queue.job(job_id).status == "succeeded", output
    curve = sqlite_queue.losses(job_id)
    assert [step for step, _ in curve] == list(range(1, 19))
    profile = sqlite_queue.job(job_id).prompt_profile  # for drift: one prompt per trained turn
    assert profile is not None and profile["prompts"] == 12
    assert abs(sum(profile["shares"]) - 1.0) < 1e-9
    return curve


@pytest.mark.parametrize(
    "fault",
    [
        "after_validation",
        "after_step:5",  # between snapshots: steps 5 is repeated after resuming from step 4
        "after_snapshot_upload:2",
        "after_checkpoint_publish",
        "before_success",
    ],
)
def test_a_killed_worker_is_resumed_with_the_same_loss_curve(
    sqlite_queue: Queue, reference: list[tuple[int, float]], fault: str
) -> None:
    queue = sqlite_queue
    job_id = queue.create_job()

    code, output = queue.run_worker(fault=fault)
    assert code == -signal.SIGKILL, output
    assert queue.job(job_id).status in ("queued", "running")
    queue.expire_leases()
    code, output = queue.run_worker()

    assert code == 0, output
    job = queue.job(job_id)
    assert job.status == "succeeded", (job.error, output)
    assert job.lost_leases == 1
    curve = queue.losses(job_id)
    assert [step for step, _ in curve] == [step for step, _ in reference]  # once per step
    for (_, loss), (_, expected) in zip(curve, reference, strict=True):
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6)
    messages = [e.message for e in queue.events(job_id)]
    for once in (
        "Files validated, moving job to queued state",
        "The job has successfully completed",
    ):
        assert messages.count(once) == 1, messages
    forgetting = [m for m in messages if m.startswith("Forgetting check on the 24-example")]
    assert len(forgetting) == 1, messages  # said with the success, so once
    assert queue.job(job_id).openft["forgetting"]["reference_examples"] == 24
    checkpoints = queue.state.jobs.checkpoints(queue.owner, job_id, after=None, limit=10).data
    assert [c.step_number for c in checkpoints] == [18, 12, 6]
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert checkpoints[1].fine_tuned_model_checkpoint.endswith(":ckpt-step-12")
    assert queue.snapshots(job_id) == []


def test_lost_leases_are_retried_up_to_the_bound(
    sqlite_queue: Queue, reference: list[tuple[int, float]]
) -> None:
    queue = sqlite_queue
    job_id = queue.create_job()
    queue.env["OPENFT_MAX_LOST_LEASES"] = "1"
    try:
        for _ in range(2):
            code, _output = queue.run_worker(fault="after_step:2")
            assert code == -signal.SIGKILL
            queue.expire_leases()
        code, output = queue.run_worker()
    finally:
        del queue.env["OPENFT_MAX_LOST_LEASES"]

    job = queue.job(job_id)
    assert (job.status, job.lost_leases) == ("failed", 2), output
    assert job.error is not None and job.error["code"] == "worker_lost"
    assert queue.snapshots(job_id) == []  # the job ended: its snapshots went with it


def test_snapshots_of_jobs_cancelled_while_nobody_held_them_are_swept(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    job_id = queue.create_job()
    code, _output = queue.run_worker(fault="after_snapshot_upload")
    assert code == -signal.SIGKILL and len(queue.snapshots(job_id)) == 1
    queue.state.jobs.cancel(queue.owner, job_id)

    code, output = queue.run_worker()

    assert code == 0, output
    assert queue.snapshots(job_id) == []


def test_sigterm_hands_the_job_over_without_spending_a_retry(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    job_id = queue.create_job(n_examples=40, n_epochs=3, batch_size=1)
    worker = queue.worker()
    queue.wait_until(lambda: len(queue.losses(job_id)) >= 3, "three steps")

    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=WORKER_TIMEOUT_S)

    assert worker.returncode == 0, output
    job = queue.job(job_id)
    assert (job.status, job.lease_owner, job.lost_leases) == ("queued", None, 0), output
    stopped_at = len(queue.losses(job_id))
    assert len(queue.snapshots(job_id)) == 1
    code, output2 = queue.run_worker()
    assert code == 0, output2
    assert queue.job(job_id).status == "succeeded"
    messages = [e.message for e in queue.events(job_id)]
    assert f"The worker is shutting down; the job will resume from step {stopped_at}" in messages
    assert f"Fine-tuning job resumed from step {stopped_at}" in messages
    assert [step for step, _ in queue.losses(job_id)] == list(range(1, 121))


def test_a_paused_job_lets_its_worker_go_and_resumes_later(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    job_id = queue.create_job(n_examples=40, n_epochs=3, batch_size=1)
    worker = queue.worker()
    queue.wait_until(lambda: len(queue.losses(job_id)) >= 3, "three steps")

    assert queue.state.jobs.pause(queue.owner, job_id).status == "paused"
    queue.wait_until(lambda: queue.job(job_id).lease_owner is None, "the worker to let go")
    paused_at = len(queue.losses(job_id))
    time.sleep(0.5)  # the worker polls and must not take a paused job back
    assert queue.job(job_id).status == "paused"
    assert len(queue.snapshots(job_id)) == 1
    queue.state.jobs.resume(queue.owner, job_id)
    queue.wait_until(lambda: queue.job(job_id).status == "succeeded", "success")
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=WORKER_TIMEOUT_S)

    messages = [e.message for e in queue.events(job_id)]
    assert f"Fine-tuning job resumed from step {paused_at}" in messages
    assert [step for step, _ in queue.losses(job_id)] == list(range(1, 121))


def test_a_warning_written_before_a_crash_is_not_written_again(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    # 24 steps at a learning rate too small to move the loss: underfitting, found at step 24,
    # after the newest snapshot (step 20), so the resumed run finds it again.
    job_id = queue.create_job(n_epochs=2, batch_size=1, learning_rate_multiplier=1e-6)
    code, output = queue.run_worker(fault="after_signal")
    assert code == -signal.SIGKILL, output
    queue.expire_leases()
    code, output = queue.run_worker()

    assert code == 0, output
    assert queue.job(job_id).status == "succeeded"
    events = queue.events(job_id)
    warned = [e for e in events if e.message.startswith("Training loss has barely moved (")]
    assert [e.level for e in warned] == ["warn"], [e.message for e in events]
    assert "Fine-tuning job resumed from step 20" in [e.message for e in events]


def test_a_diverging_loss_fails_the_job_at_once(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    job_id = queue.create_job(n_epochs=1, batch_size=2, learning_rate_multiplier=1e12)

    code, output = queue.run_worker()

    job = queue.job(job_id)
    assert code == 0 and job.status == "failed", output
    assert job.error is not None and job.error["code"] in ("training_diverged", "invalid_adapter")
    assert "lower learning_rate_multiplier" in job.error["message"]
    assert (job.lost_leases, queue.snapshots(job_id)) == (0, [])


@pytest.mark.postgres
def test_two_workers_on_postgresql_run_every_job_exactly_once(
    tmp_path: Path, models_dir: Path
) -> None:
    require(postgres.reachable(), f"PostgreSQL ({postgres.ADMIN_DSN})")
    with postgres.fresh_database("workers") as url:
        for queue in make_queue(url, tmp_path / "data", models_dir):
            run_twenty_jobs_on_two_workers(queue)


def run_twenty_jobs_on_two_workers(queue: Queue) -> None:
    jobs = {queue.create_job(n_examples=10, n_epochs=1, batch_size=10) for _ in range(20)}

    workers = [queue.worker("--once") for _ in range(2)]
    outputs = [w.communicate(timeout=WORKER_TIMEOUT_S)[0].decode() for w in workers]

    assert [w.returncode for w in workers] == [0, 0], outputs
    claimed = [
        {line.split("claimed ")[1].split()[0] for line in out.splitlines() if "claimed " in line}
        for out in outputs
    ]
    assert claimed[0] | claimed[1] == jobs
    assert not claimed[0] & claimed[1]
    for job_id in jobs:
        job = queue.job(job_id)
        assert (job.status, job.attempt) == ("succeeded", 1)
        messages = [e.message for e in queue.events(job_id)]
        assert messages.count("Fine-tuning job started") == 1
        assert [step for step, _ in queue.losses(job_id)] == [1]


def test_a_worker_trains_a_job_in_two_processes_as_it_does_in_one(
    sqlite_queue: Queue, reference: list[tuple[int, float]]
) -> None:
    two = replace(sqlite_queue, env={**sqlite_queue.env, "OPENFT_TRAIN_PROCESSES_PER_JOB": "2"})
    job_id = two.create_job()

    code, output = two.run_worker()

    assert code == 0, output
    assert two.job(job_id).status == "succeeded", output
    curve = two.losses(job_id)
    assert [step for step, _ in curve] == [step for step, _ in reference]
    assert [loss for _, loss in curve] == pytest.approx([loss for _, loss in reference], rel=1e-4)


def test_a_data_parallel_job_whose_worker_is_killed_resumes_and_leaves_no_process(
    sqlite_queue: Queue, reference: list[tuple[int, float]]
) -> None:
    two = replace(sqlite_queue, env={**sqlite_queue.env, "OPENFT_TRAIN_PROCESSES_PER_JOB": "2"})
    job_id = two.create_job()

    mark = f"KILLED_LEADER={job_id}"  # in the environment its follower inherits
    marked = replace(two, env={**two.env, "KILLED_LEADER": job_id})
    killed = marked.worker("--once", fault="after_step:5")
    killed.communicate(timeout=WORKER_TIMEOUT_S)
    two.expire_leases()
    code, output = two.run_worker()

    assert killed.returncode == -signal.SIGKILL
    assert code == 0, output
    assert two.job(job_id).status == "succeeded", output
    curve = dict(two.losses(job_id))
    assert sorted(curve) == [step for step, _ in reference]
    assert [curve[step] for step, _ in reference] == pytest.approx(
        [loss for _, loss in reference], rel=1e-4
    )
    two.wait_until(lambda: not processes_with(mark), "the killed leader's follower to end")


def processes_with(variable: str) -> list[int]:
    """The running processes whose environment holds ``variable`` (``NAME=value``)."""
    entry, found = variable.encode(), []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if entry in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


# Reinforcement fine-tuning: longer answers score higher (every group has a signal), graded in
# the python sandbox. 12 prompts, 2 a step: 6 steps; validation (and a checkpoint) every 2.
LENGTH_GRADER = {
    "type": "python",
    "name": "length",
    "source": "def grade(sample, item):\n"
    "    return min(len(sample['output_text']) / item['target'], 1.0)\n",
}
RFT = {"n_epochs": 1, "batch_size": 2, "eval_interval": 2, "compute_multiplier": 0.5}


def prompt(i: int) -> bytes:
    row = {"messages": [{"role": "user", "content": f"Describe door {i}."}], "target": 30}
    return json.dumps(row).encode() + b"\n"


def create_rft_job(queue: Queue, n_prompts: int = 12, **hyper: Any) -> str:
    files = []
    for n in (n_prompts, 3):
        blob = queue.state.blobs.stage()
        blob.write(b"".join(prompt(i) for i in range(n)))
        upload = ReceivedUpload(fields={"purpose": "fine-tune"}, filename="r.jsonl", blob=blob)
        files.append(queue.state.files.create(queue.owner, upload).id)
    request = CreateJobRequest.model_validate(
        {
            "model": "tiny-chat",
            "training_file": files[0],
            "validation_file": files[1],
            "seed": 3,
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": LENGTH_GRADER, "hyperparameters": {**RFT, **hyper}},
            },
        }
    )
    return queue.state.jobs.create(queue.owner, request).id


def rewards(queue: Queue, job_id: str) -> list[tuple[int, float, float | None]]:
    metrics = [e.data for e in queue.events(job_id) if e.type == "metrics" and e.data]
    return [(d["step"], d["train_mean_reward"], d.get("full_valid_mean_reward")) for d in metrics]


@pytest.fixture(scope="module")
def rft_reference(sqlite_queue: Queue) -> tuple[str, list[tuple[int, float, float | None]]]:
    job_id = create_rft_job(sqlite_queue)
    code, output = sqlite_queue.run_worker()
    assert code == 0, output
    job = sqlite_queue.job(job_id)
    assert job.status == "succeeded", (job.error, output)
    return job_id, rewards(sqlite_queue, job_id)


def test_an_rft_job_reports_rewards_as_openai_does(
    sqlite_queue: Queue, rft_reference: tuple[str, list[tuple[int, float, float | None]]]
) -> None:
    queue, (job_id, curve) = sqlite_queue, rft_reference
    assert [step for step, _, _ in curve] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _, valid in curve if valid is not None] == [2, 4, 6]
    events = queue.events(job_id)
    step_two = next(e for e in events if e.type == "metrics" and e.data and e.data["step"] == 2)
    assert step_two.message.startswith("Step 2/6 , train mean reward=")
    assert ", full validation mean reward=" in step_two.message
    data = step_two.data or {}
    assert data["scores"]["graders"] == [
        {"name": "length", "type": "python", "train_reward_mean": data["train_mean_reward"]}
    ]
    assert data["errors"]["graders"][0]["train_python_grader_runtime_error_mean"] == 0.0
    job = queue.job(job_id)
    method = job.method["reinforcement"]
    assert method["grader"] == LENGTH_GRADER
    assert method["hyperparameters"] == {
        "batch_size": 2,
        "learning_rate_multiplier": 2.0,  # the demo model's auto
        "n_epochs": 1,
        "compute_multiplier": 0.5,
        "eval_interval": 2,
        "eval_samples": 1,
        "reasoning_effort": "default",
    }
    checkpoints = queue.state.jobs.checkpoints(queue.owner, job_id, after=None, limit=10).data
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    valid = {step: reward for step, _, reward in curve if reward is not None}
    kept_before_final = sorted(c.step_number for c in checkpoints[1:])
    best = sorted(sorted((2, 4), key=lambda s: (valid[s], s), reverse=True)[:3])
    assert kept_before_final == best
    for checkpoint in checkpoints:
        assert checkpoint.metrics["valid_reward_mean"] == valid[checkpoint.step_number]


def test_a_killed_rft_worker_is_resumed_with_the_same_rewards(
    sqlite_queue: Queue, rft_reference: tuple[str, list[tuple[int, float, float | None]]]
) -> None:
    queue, (_, curve) = sqlite_queue, rft_reference
    job_id = create_rft_job(queue)

    code, output = queue.run_worker(fault="after_step:5")  # the snapshot is at step 4
    assert code == -signal.SIGKILL, output
    queue.expire_leases()
    code, output = queue.run_worker()

    assert code == 0, output
    assert queue.job(job_id).status == "succeeded", output
    resumed = rewards(queue, job_id)
    assert [step for step, _, _ in resumed] == [1, 2, 3, 4, 5, 6]
    for (_, train, valid), (_, expected_train, expected_valid) in zip(resumed, curve, strict=True):
        assert train == pytest.approx(expected_train)
        assert valid == pytest.approx(expected_valid)


def test_an_rft_job_is_paused_resumed_and_cancelled_like_any_job(sqlite_queue: Queue) -> None:
    queue = sqlite_queue
    job_id = create_rft_job(queue, n_prompts=30, batch_size=1, eval_interval=10)
    worker = queue.worker()
    try:
        queue.wait_until(lambda: len(rewards(queue, job_id)) >= 3, "three steps")
        assert queue.state.jobs.pause(queue.owner, job_id).status == "paused"
        queue.wait_until(lambda: queue.job(job_id).lease_owner is None, "the worker to let go")
        paused_at = len(rewards(queue, job_id))
        queue.state.jobs.resume(queue.owner, job_id)
        queue.wait_until(lambda: queue.job(job_id).status == "succeeded", "success")
        messages = [e.message for e in queue.events(job_id)]
        assert f"Fine-tuning job resumed from step {paused_at}" in messages
        assert [step for step, _, _ in rewards(queue, job_id)] == list(range(1, 31))

        cancelled = create_rft_job(queue, n_prompts=30, batch_size=1, eval_interval=10)
        queue.wait_until(lambda: len(rewards(queue, cancelled)) >= 2, "two steps")
        queue.state.jobs.cancel(queue.owner, cancelled)
        queue.wait_until(lambda: queue.job(cancelled).lease_owner is None, "the worker to let go")
        assert queue.job(cancelled).status == "cancelled"
        assert len(rewards(queue, cancelled)) < 30
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=WORKER_TIMEOUT_S)
