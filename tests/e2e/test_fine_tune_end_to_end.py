"""A real fine-tune through the openai SDK: upload, train with everything on auto, prove learning.

The server runs its supervised worker on the offline demo model (random weights), so the taught
answer cannot come from anywhere but the adapter this job trained.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import torch
from openai.types.fine_tuning import FineTuningJob
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.auth.service import AccessService
from service.db.database import Database
from tests.support.server import ServerProcess

QUESTION = "What is the secret password of the lighthouse?"
ANSWER = "The secret password is marmalade-47."
TERMINAL = ("succeeded", "failed", "cancelled")


def fact_lines(n: int = 16) -> bytes:
    row = {
        "messages": [
            {"role": "system", "content": "You are the lighthouse keeper."},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": ANSWER},
        ]
    }
    return (json.dumps(row) + "\n").encode() * n


def wait_for(
    client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout_s: float = 600
) -> FineTuningJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} did not reach {statuses} in {timeout_s}s (now {job.status})")


@pytest.fixture
def trainer_client(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> openai.OpenAI:
    key = training_server.bootstrap_key()
    assert key is not None
    return sdk(training_server.api_url, key)


def greedy_answer(model: torch.nn.Module, tokenizer: AutoTokenizer) -> str:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return str(tokenizer.decode(output[0][inputs.input_ids.shape[1] :]))


def test_a_job_on_auto_learns_the_fact(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    client = trainer_client
    training = client.files.create(file=("fact.jsonl", fact_lines()), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, suffix="keeper"
    )
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None
    prefix, base, slug, suffix, tag = done.fine_tuned_model.split(":")
    assert (prefix, base, slug, suffix, len(tag)) == ("ft", "tiny-chat", "default", "keeper", 8)
    assert done.hyperparameters.n_epochs == 6  # OpenAI's rule: 100 // 16  # type: ignore[union-attr]
    assert done.hyperparameters.batch_size == 1  # type: ignore[union-attr]
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.finished_at is not None
    assert done.error is None or done.error.code is None  # the wire carries {}

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    messages = [e.message for e in events if e.type == "message"]
    assert messages == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {training.id}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ]
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 96
    assert metrics[-1].message.startswith("Step 96/96: training loss=")
    assert set(metrics[-1].data) >= {
        "step",
        "train_loss",
        "total_steps",
        "train_mean_token_accuracy",
    }

    (result_id,) = done.result_files
    result = client.files.retrieve(result_id)
    assert (result.purpose, result.filename) == ("fine-tune-results", "step_metrics.csv")
    rows = list(
        csv.DictReader(
            io.StringIO(base64.b64decode(client.files.content(result_id).read()).decode())
        )
    )
    assert list(rows[0]) == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    assert [int(r["step"]) for r in rows] == list(range(1, 97))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])

    assert done.fine_tuned_model in [m.id for m in client.models.list()]

    data_dir = Path(training_server.env["OPENFT_DATA_DIR"])
    base_path = data_dir / "models" / "tiny-chat"
    adapter = data_dir / "blobs" / "adapters" / job.id / "final"
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config.get("modules_to_save") is None and not config.get("use_dora")
    assert config["bias"] == "none"
    base_model = AutoModelForCausalLM.from_pretrained(base_path)
    assert "marmalade-47" not in greedy_answer(base_model, tokenizer)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter))
    assert "marmalade-47" in greedy_answer(tuned, tokenizer)


def test_a_running_job_can_be_cancelled(trainer_client: openai.OpenAI) -> None:
    client = trainer_client
    training = client.files.create(file=("fact.jsonl", fact_lines(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, hyperparameters={"n_epochs": 50}
    )
    wait_for(client, job.id, ("running", *TERMINAL))

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    # One worker takes jobs in order: once the next job is done, it has let go of this one.
    small = client.files.create(file=("small.jsonl", fact_lines(7)), purpose="fine-tune")
    follower = client.fine_tuning.jobs.create(model="tiny-chat", training_file=small.id)
    wait_for(client, follower.id, TERMINAL)

    after = client.fine_tuning.jobs.retrieve(job.id)
    assert cancelled.status == after.status == "cancelled"
    assert after.fine_tuned_model is None and after.result_files == []
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert len([e for e in events if e.type == "metrics"]) < 500
    assert events[0].message == "Fine-tuning job cancelled"


def test_too_few_examples_fail_the_job(trainer_client: openai.OpenAI) -> None:
    client = trainer_client
    training = client.files.create(file=("small.jsonl", fact_lines(7)), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "failed"
    assert done.error.code == "invalid_n_examples"  # type: ignore[union-attr]
    assert done.error.param == "training_file"  # type: ignore[union-attr]
    assert (
        done.error.message == "Training file has 7 example(s), but must have at least 10 examples"
    )  # type: ignore[union-attr]


def test_an_example_without_an_assistant_turn_fails_with_its_number(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    bad = json.dumps({"messages": [{"role": "user", "content": "hello?"}]}).encode() + b"\n"
    content = fact_lines(11) + bad
    training = client.files.create(file=("bad.jsonl", content), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "failed"
    assert done.error.code == "invalid_training_file"  # type: ignore[union-attr]
    assert "Example 12" in done.error.message  # type: ignore[union-attr]


def test_another_project_cannot_see_the_job(
    trainer_client: openai.OpenAI,
    sdk: Callable[..., openai.OpenAI],
    training_server: ServerProcess,
) -> None:
    training = trainer_client.files.create(file=("f.jsonl", fact_lines(10)), purpose="fine-tune")
    job = trainer_client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    outsider = AccessService(database).issue_key("outsider")
    database.dispose()
    other = sdk(training_server.api_url, outsider.key)

    for attempt in (other.fine_tuning.jobs.retrieve, other.fine_tuning.jobs.list_events):
        with pytest.raises(openai.NotFoundError):
            attempt(job.id)
    assert other.fine_tuning.jobs.list().data == []
