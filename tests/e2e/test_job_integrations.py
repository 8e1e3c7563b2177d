"""Job integrations through the official SDK on the training server (``WANDB_MODE=offline``):
a job naming W&B echoes OpenAI's run id and leaves a run file holding every step it reported;
an integration the server is not configured for is a 400 naming the field."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.e2e.test_fine_tune_end_to_end import TERMINAL, fact_lines, wait_for
from tests.support.server import ServerProcess
from tests.support.wandb_files import read_run


def test_a_wandb_job_logs_every_step_to_its_run(
    training_server: ServerProcess, trainer_client: openai.OpenAI
) -> None:
    training = trainer_client.files.create(file=("train.jsonl", fact_lines()), purpose="fine-tune")
    job = trainer_client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training.id,
        integrations=[{"type": "wandb", "wandb": {"project": "lighthouse", "tags": ["e2e"]}}],
    )
    (integration,) = job.integrations or []
    assert (integration.type, integration.wandb.project) == ("wandb", "lighthouse")
    assert integration.wandb.model_dump().get("run_id") == job.id  # as api.openai.com echoes it

    done = wait_for(trainer_client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    events = list(trainer_client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert not [e.message for e in events if "integration failed" in e.message]
    steps = sorted(e.data["step"] for e in events if e.type == "metrics" and e.data)
    folder = Path(training_server.env["OPENFT_DATA_DIR"], "wandb")
    (path,) = folder.glob(f"offline-run-*-{job.id}/run-{job.id}.wandb")
    run = read_run(path)
    assert [row["_step"] for row in run.history] == steps
    assert run.tags[:3] == ["openai/finetune", "openai/tiny-chat", f"openai/{job.id}"]
    assert run.summary["fine_tuned_model"] == done.fine_tuned_model


def test_an_integration_the_server_is_not_configured_for_is_a_400(
    trainer_client: openai.OpenAI,
) -> None:
    training = trainer_client.files.create(file=("train.jsonl", fact_lines()), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        trainer_client.fine_tuning.jobs.create(
            model="tiny-chat",
            training_file=training.id,
            integrations=[{"type": "openft_mlflow", "openft_mlflow": {}}],  # type: ignore[typeddict-item,typeddict-unknown-key]
        )
    assert refused.value.param == "integrations[0].type"
    assert "OPENFT_MLFLOW_TRACKING_URI" in refused.value.message
