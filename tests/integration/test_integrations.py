"""A job's integrations with real clients: a worker (``python -m trainer.worker``) trains a job
that names W&B (the official SDK, ``WANDB_MODE=offline``: the run file it would sync) and MLflow
(its SQLite store), and both hold the job's loss curve, hyperparameters and model name; a
broken integration is a warn event on a job that still succeeds."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from service.app import build_state
from service.auth.principal import Principal
from service.db import migrate
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
from service.settings import Settings
from tests.integration.test_worker_recovery import SMALL, Queue, chat, models_dir
from tests.support.wandb_files import WandbRun, read_run

__all__ = ["models_dir"]  # the fixture, shared with the recovery tests


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Queue]:
    root = tmp_path_factory.mktemp("integrations")
    data_dir, tracking = root / "data", f"sqlite:///{root / 'mlflow.db'}"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny-chat").symlink_to(models_dir / "tiny-chat")
    database_url = f"sqlite:///{root / 'openft.db'}"
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        wandb_mode="offline",
        mlflow_tracking_uri=tracking,
    )
    state = build_state(settings)
    migrate.upgrade(state.db)
    issued = state.access.issue_key("tracked")
    env = {
        **os.environ,
        "HOME": str(root),  # W&B's own settings folder
        "OPENFT_DATA_DIR": str(data_dir),
        "OPENFT_DATABASE_URL": database_url,
        "OPENFT_WORKER_POLL_SECONDS": "0.2",
        "WANDB_MODE": "offline",
        "OPENFT_MLFLOW_TRACKING_URI": tracking,
    }
    yield Queue(state, env, Principal(issued.project_id, issued.project_slug, issued.key_id))
    state.db.dispose()


def create_job(queue: Queue, integrations: list[dict[str, Any]]) -> str:
    blob = queue.state.blobs.stage()
    blob.write(b"".join(chat(i) for i in range(12)))
    upload = ReceivedUpload(fields={"purpose": "fine-tune"}, filename="t.jsonl", blob=blob)
    training = queue.state.files.create(queue.owner, upload)
    request = CreateJobRequest(
        model="tiny-chat",
        training_file=training.id,
        seed=7,
        hyperparameters=SMALL,
        integrations=integrations,
    )
    return queue.state.jobs.create(queue.owner, request).id


WANDB = {"type": "wandb", "wandb": {"project": "support-bot", "tags": ["faq"]}}
MLFLOW = {
    "type": "openft_mlflow",
    "openft_mlflow": {"experiment_name": "support", "tags": {"team": "cx"}},
}


def wandb_run(queue: Queue, job_id: str) -> WandbRun:
    (path,) = Path(queue.env["OPENFT_DATA_DIR"], "wandb").glob(
        f"offline-run-*-{job_id}/run-{job_id}.wandb"
    )
    return read_run(path)


def test_a_job_logs_its_curve_to_wandb_and_mlflow(queue: Queue) -> None:
    job_id = create_job(queue, [WANDB, MLFLOW])
    echoed = queue.state.jobs.retrieve(queue.owner, job_id).integrations
    assert echoed[0] == {
        "type": "wandb",
        "wandb": {
            "project": "support-bot",
            "name": None,
            "entity": None,
            "tags": ["faq"],
            "run_id": job_id,
        },
    }

    code, output = queue.run_worker()

    assert code == 0, output
    job = queue.job(job_id)
    assert job.status == "succeeded", (job.error, output)
    losses = queue.losses(job_id)
    assert [step for step, _ in losses] == list(range(1, 19))
    assert not [e.message for e in queue.events(job_id) if "integration" in e.message]

    run = wandb_run(queue, job_id)
    assert (run.run_id, run.project, run.name) == (job_id, "support-bot", job_id)
    assert run.tags == ["openai/finetune", "openai/tiny-chat", f"openai/{job_id}", "faq"]
    assert run.config["hyperparameters"] == job.method["supervised"]["hyperparameters"]
    assert run.config["model"] == "tiny-chat" and run.config["seed"] == 7
    assert [(row["_step"], row["train_loss"]) for row in run.history] == [
        (step, pytest.approx(loss)) for step, loss in losses
    ]
    assert run.summary["fine_tuned_model"] == job.fine_tuned_model and run.exit_code == 0

    client = MlflowClient(tracking_uri=queue.env["OPENFT_MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("support")
    assert experiment is not None
    (found,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`openft.job_id` = '{job_id}'"
    )
    assert found.info.status == "FINISHED" and found.info.run_name == job_id
    assert found.data.tags["fine_tuned_model"] == job.fine_tuned_model
    assert found.data.tags["team"] == "cx"
    assert found.data.params["n_epochs"] == "3" and found.data.params["model"] == "tiny-chat"
    curve = client.get_metric_history(found.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in curve) == [
        (step, pytest.approx(loss)) for step, loss in losses
    ]


def test_a_broken_integration_is_a_warning_on_a_job_that_succeeds(queue: Queue) -> None:
    job_id = create_job(queue, [MLFLOW, WANDB])
    broken = dataclasses.replace(
        queue, env={**queue.env, "OPENFT_MLFLOW_TRACKING_URI": "sqlite:////dev/null/mlflow.db"}
    )

    code, output = broken.run_worker()

    assert code == 0, output
    job = queue.job(job_id)
    assert job.status == "succeeded", (job.error, output)
    warnings = [e.message for e in queue.events(job_id) if e.level == "warn"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("The openft_mlflow integration failed and is off"), warnings
    assert len(wandb_run(queue, job_id).history) == 18  # the other integration went on
