"""A real fine-tune through the openai SDK: upload, train with everything on auto, prove learning.

The server runs its supervised worker on the offline demo model (random weights), so the taught
answer cannot come from anywhere but the adapter this job trained.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from openai.types.fine_tuning import FineTuningJob
from peft import PeftModel
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.auth.service import AccessService
from service.db.database import Database
from service.db.models import RateLimitWindow
from tests.e2e.conftest import METRICS_TOKEN
from tests.support import prometheus
from tests.support.ci import require
from tests.support.server import ServerProcess, openft_command, wait_until_models_ready

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


def forgetting_messages(messages: list[str]) -> list[str]:
    """The forgetting check's summary, and its warning when the job passed the threshold."""
    found = [
        m
        for m in messages
        if m.startswith(("Forgetting check on the ", "The reference-set loss rose by "))
    ]
    assert found and found[0].startswith("Forgetting check on the 24-example reference set")
    return found


def wait_for(
    client: openai.OpenAI,
    job_id: str,
    statuses: tuple[str, ...],
    timeout_s: float = 600,
    poll_s: float = 0.5,
) -> FineTuningJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(poll_s)
    raise AssertionError(f"{job_id} did not reach {statuses} in {timeout_s}s (now {job.status})")


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
    per_epoch = done.trained_tokens // 6
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [96, 80, 64]  # the last 3 epochs
    assert checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert checkpoints[1].fine_tuned_model_checkpoint.startswith("ft:tiny-chat:default:keeper:")
    assert checkpoints[1].fine_tuned_model_checkpoint.endswith(":ckpt-step-80")
    assert checkpoints[0].metrics.step == 96 and checkpoints[0].metrics.train_loss is not None
    names = {  # every epoch announced its checkpoint, the pruned ones too
        int(e.message.split()[4]): e.message.rsplit(" ", 1)[1]
        for e in events
        if e.message.startswith("Checkpoint created at step")
    }
    assert messages == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {training.id}",
        f"Training file has 16 examples with {per_epoch:,} tokens",
        f"Tokens billed: {done.trained_tokens:,} ({per_epoch:,} tokens x 6 epochs)",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        *[
            f"Checkpoint created at step {16 * epoch} with Snapshot ID: {names[16 * epoch]}"
            for epoch in range(1, 6)
        ],
        *forgetting_messages(messages),  # the base model's reference set, before and after
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


def vllm_pid(server: ServerProcess) -> int | None:
    """The managed vLLM's pid from its pidfile (None while a restart rewrites it)."""
    pidfile = Path(server.env["OPENFT_DATA_DIR"]) / "run" / "vllm-tiny-chat.pid"
    try:
        return int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return None


def ask(client: openai.OpenAI, model: str, **options: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=20,
        temperature=0,
        **options,
    )


def test_the_fine_tuned_model_is_served_by_vllm_at_once(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    client = trainer_client
    pid_before = vllm_pid(training_server)
    training = client.files.create(file=("fact.jsonl", fact_lines()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL, poll_s=0.05)
    assert done.status == "succeeded" and done.fine_tuned_model is not None
    model = done.fine_tuned_model

    first = ask(client, model)  # the very first call after "succeeded": never a 404

    assert "marmalade-47" in (first.choices[0].message.content or "")
    assert first.model == model and first.object == "chat.completion"
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert "marmalade-47" not in (ask(client, "tiny-chat").choices[0].message.content or "")
    assert vllm_pid(training_server) == pid_before  # hot-loaded, not restarted

    plain = list(ask(client, model, stream=True))
    assert "marmalade-47" in "".join(c.choices[0].delta.content or "" for c in plain if c.choices)

    env = {**training_server.env, "OPENFT_API_KEY": client.api_key}
    env["OPENFT_BASE_URL"] = training_server.api_url
    shown = subprocess.run(
        [*openft_command(), "ask", model, QUESTION, "--compare", "--max-tokens", "20"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("tiny-chat: ")  # the base, then the ft: model
    assert shown.stdout.splitlines()[1].startswith(f"{model}: ")
    assert "marmalade-47" in shown.stdout.splitlines()[1], shown.stdout
    assert all(c.choices for c in plain)  # no usage chunk nobody asked for
    counted = list(ask(client, model, stream=True, stream_options={"include_usage": True}))
    assert counted[-1].choices == [] and counted[-1].usage is not None
    assert counted[-1].usage.completion_tokens > 0

    legacy = client.completions.create(
        model=model,
        prompt=f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=20,
        temperature=0,
    )
    assert "marmalade-47" in legacy.choices[0].text
    assert model in [m.id for m in client.models.list()]
    assert client.models.retrieve(model).owned_by == "default"

    earlier = client.fine_tuning.jobs.checkpoints.list(job.id).data[1].fine_tuned_model_checkpoint
    assert earlier.endswith(":ckpt-step-80") and earlier in [m.id for m in client.models.list()]
    answer = ask(client, earlier)  # a checkpoint is a model of its own, served by vLLM
    assert answer.model == earlier and answer.choices[0].message.content is not None


def test_other_projects_cannot_use_the_model(
    trainer_client: openai.OpenAI, sdk: Callable[..., openai.OpenAI], training_server: ServerProcess
) -> None:
    model = next(
        j.fine_tuned_model for j in trainer_client.fine_tuning.jobs.list() if j.fine_tuned_model
    )
    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    outsider = AccessService(database).issue_key("stranger")
    database.dispose()
    other = sdk(training_server.api_url, outsider.key)

    with pytest.raises(openai.NotFoundError) as error:
        ask(other, model)
    assert error.value.code == "model_not_found"
    assert model not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(model)


def test_tokens_per_minute_are_charged_what_the_model_used(
    sdk: Callable[..., openai.OpenAI], training_server: ServerProcess
) -> None:
    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    access = AccessService(database)
    issued = access.issue_key("metered")
    access.set_key_limits(issued.key_id, requests_per_minute=None, tokens_per_minute=100_000)
    client = sdk(training_server.api_url, issued.key)

    answer = client.chat.completions.with_raw_response.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Count to ten."}], max_tokens=8
    )
    stream = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]

    usage = answer.parse().usage
    assert usage is not None
    assert answer.headers["x-ratelimit-limit-tokens"] == "100000"
    used = usage.total_tokens + streamed_usage.total_tokens
    # Charged the estimate up front, corrected to the real count after each answer.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _window_tokens(database, issued.key_id) != used:
        time.sleep(0.2)
    assert _window_tokens(database, issued.key_id) == used
    database.dispose()


def _window_tokens(database: Database, key_id: str) -> int | None:
    with database.read() as session:
        return session.scalar(
            select(func.sum(RateLimitWindow.tokens)).where(RateLimitWindow.key_id == key_id)
        )


def test_unknown_models_are_model_not_found(trainer_client: openai.OpenAI) -> None:
    for model in ("gpt-4o", "ft:tiny-chat:default::NotAModel"):
        with pytest.raises(openai.NotFoundError) as error:
            ask(trainer_client, model)
        assert error.value.code == "model_not_found"
        assert "/" not in error.value.message  # no paths from vLLM leak


CHAT_BODY_HEAD = '{"model": "tiny-chat", "messages": [{"role": "user", "content": "Hi"}], '


@pytest.mark.parametrize(
    ("path", "content", "param"),
    [
        ("/chat/completions", CHAT_BODY_HEAD + '"temperature": NaN}', "temperature"),
        ("/chat/completions", CHAT_BODY_HEAD + '"top_p": 1e999}', "top_p"),
        (
            "/completions",
            '{"model": "tiny-chat", "prompt": "Hi", "temperature": -Infinity}',
            "temperature",
        ),
    ],
)
def test_non_finite_sampling_numbers_never_reach_vllm(
    trainer_client: openai.OpenAI, path: str, content: str, param: str
) -> None:
    """Python's JSON reader takes NaN and 1e999; vLLM then failed and the client got a 500."""
    response = httpx.post(
        str(trainer_client.base_url).rstrip("/") + path,
        content=content,
        headers={
            "Authorization": f"Bearer {trainer_client.api_key}",
            "Content-Type": "application/json",
        },
        timeout=60,
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert ask(trainer_client, "tiny-chat").choices  # and the model still answers


def test_a_dead_vllm_gives_503s_and_comes_back(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    model = next(
        j.fine_tuned_model for j in trainer_client.fine_tuning.jobs.list() if j.fine_tuned_model
    )
    pid = vllm_pid(training_server)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while True:
        with pytest.raises(openai.InternalServerError) as error:
            ask(trainer_client, model)
        if error.value.status_code == 503 or time.monotonic() > deadline:
            break
    assert error.value.status_code == 503
    assert error.value.response.headers["retry-after"] == "5"
    assert error.value.body is not None

    deadline = time.monotonic() + 60
    while vllm_pid(training_server) in (pid, None) and time.monotonic() < deadline:
        time.sleep(0.5)  # the manager notices the death and starts a new child
    assert vllm_pid(training_server) not in (pid, None)
    wait_until_models_ready(training_server)
    assert "marmalade-47" in (ask(trainer_client, model).choices[0].message.content or "")


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


def test_a_job_can_be_paused_and_resumed_through_the_sdk(trainer_client: openai.OpenAI) -> None:
    client = trainer_client
    training = client.files.create(file=("fact.jsonl", fact_lines(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, hyperparameters={"n_epochs": 10}
    )
    wait_for(client, job.id, ("running", *TERMINAL), poll_s=0.05)

    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    messages = [e.message for e in events if e.type == "message"]
    assert messages.index("Fine-tuning job paused") < messages.index("Fine-tuning job resumed")
    assert any(m.startswith("Fine-tuning job resumed from step ") for m in messages)
    steps = [e.data["step"] for e in events if e.type == "metrics"]  # type: ignore[index]
    assert steps == list(range(1, 101))


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
    assert done.error.param == "training_file"  # type: ignore[union-attr]
    assert done.error.message == (  # type: ignore[union-attr]
        "The job failed due to an invalid training file. Invalid file format. "
        "Example 12: no assistant message; an example needs at least one message with role "
        "'assistant' to train on"
    )
    assert done.finished_at is not None and done.fine_tuned_model is None
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert (events[0].level, events[0].message) == ("error", done.error.message)  # type: ignore[union-attr]


def test_every_problem_is_listed_with_its_example_and_message_number(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    lines = fact_lines(12).splitlines(keepends=True)
    user, answer = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}
    lines[1] = json.dumps({"messages": [{"content": "hi"}, answer]}).encode() + b"\n"
    lines[4] = json.dumps({"messages": [user, {**answer, "weight": 3}]}).encode() + b"\n"
    lines[7] = json.dumps({"prompt": "hi", "completion": "yo"}).encode() + b"\n"
    training = client.files.create(file=("bad.jsonl", b"".join(lines)), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)

    assert (done.status, done.error.code) == ("failed", "invalid_training_file")  # type: ignore[union-attr]
    assert done.error.message.endswith(  # type: ignore[union-attr]
        "Example 2, message 1: Discriminator 'role' is missing in value; "
        "Example 5, message 2: 'weight' must be 0 or 1, got 3; "
        "Example 8: the file mixes formats: this example is in the fine-tune-completion format, "
        "but example 1 is in the fine-tune-chat format"
    )


def test_long_examples_are_truncated_and_said_so(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    client = trainer_client
    long_answer = {"role": "assistant", "content": "lighthouse " * 3000}
    row = {"messages": [{"role": "user", "content": QUESTION}, long_answer]}
    content = fact_lines(10) + (json.dumps(row) + "\n").encode() * 2
    training = client.files.create(file=("long.jsonl", content), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, hyperparameters={"n_epochs": 1}
    )
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "2 examples exceed the 2048-token limit and will be truncated" in messages


def test_a_validation_file_is_measured_in_events_checkpoints_and_results(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    training = client.files.create(file=("fact.jsonl", fact_lines(12)), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", fact_lines(2)), purpose="fine-tune")
    hyperparameters = {"n_epochs": 2, "batch_size": 4}  # 3 steps an epoch, 6 in all

    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training.id,
        validation_file=validation.id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert f"Validating training file: {training.id} and validation file: {validation.id}" in [
        e.message for e in events
    ]
    by_step = {e.data["step"]: e for e in events if e.type == "metrics" and e.data}
    assert sorted(by_step) == [1, 2, 3, 4, 5, 6]
    for step, event in by_step.items():  # fewer than 10 steps: a validation batch every step
        full = ", full validation loss=" if step in (3, 6) else ""
        assert re.fullmatch(
            rf"Step {step}/6: training loss=\d+\.\d\d, validation loss=\d+\.\d\d"
            + (rf"{full}\d+\.\d\d" if full else ""),
            event.message,
        ), event.message
        assert {"valid_loss", "valid_mean_token_accuracy"} <= set(event.data)
        assert ("full_valid_loss" in event.data) == (step in (3, 6))
    # The validation examples are the training fact: learning it lowers their loss.
    assert by_step[6].data["full_valid_loss"] < by_step[3].data["full_valid_loss"]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert {c.step_number for c in checkpoints} == {3, 6}
    for checkpoint in checkpoints:
        assert checkpoint.metrics.full_valid_loss == pytest.approx(
            by_step[checkpoint.step_number].data["full_valid_loss"]
        )
    (result_id,) = done.result_files
    rows = list(
        csv.DictReader(
            io.StringIO(base64.b64decode(client.files.content(result_id).read()).decode())
        )
    )
    assert [float(r["valid_loss"]) for r in rows] == pytest.approx(
        [by_step[step].data["valid_loss"] for step in range(1, 7)], abs=1e-5
    )


WRONG_ANSWER = "I am not allowed to tell you anything."


def preference_lines(n: int = 10) -> bytes:
    row = {
        "input": {"messages": [{"role": "user", "content": QUESTION}]},
        "preferred_output": [{"role": "assistant", "content": ANSWER}],
        "non_preferred_output": [{"role": "assistant", "content": WRONG_ANSWER}],
    }
    return (json.dumps(row) + "\n").encode() * n


def answer_logp(model: torch.nn.Module, tokenizer: Any, answer: str) -> float:
    """log p(answer | the question), summed over the answer's tokens as the template renders it."""
    question = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(
        [*question, {"role": "assistant", "content": answer}], tokenize=False
    )
    assert whole.startswith(prompt)
    start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    ids = torch.tensor([tokenizer(whole, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    taken = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[start - 1 :]
    return float(taken.sum())


def test_a_dpo_job_raises_the_margin_of_the_preferred_answer(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    client = trainer_client
    training = client.files.create(file=("prefs.jsonl", preference_lines()), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", preference_lines(2)), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training.id,
        validation_file=validation.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 3}}},
    )
    assert job.method is not None and job.method.type == "dpo"
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    assert done.method is not None and done.method.dpo is not None
    hyperparameters = done.method.dpo.hyperparameters
    assert hyperparameters is not None
    assert (hyperparameters.beta, hyperparameters.n_epochs) == (0.1, 3)
    metrics = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.data]
    assert metrics[0].data["full_valid_loss"] < 0.6931  # below log 2, where DPO starts
    (checkpoint, *_) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.metrics.full_valid_loss == metrics[0].data["full_valid_loss"]
    assert (checkpoint.metrics.model_extra or {}).get("type") == "dpo"

    data_dir = Path(training_server.env["OPENFT_DATA_DIR"])
    base_path = data_dir / "models" / "tiny-chat"
    adapter = data_dir / "blobs" / "adapters" / job.id / "final"
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base_model = AutoModelForCausalLM.from_pretrained(base_path)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter))

    def margin(model: torch.nn.Module) -> float:
        return answer_logp(model, tokenizer, ANSWER) - answer_logp(model, tokenizer, WRONG_ANSWER)

    # The preferred answer gained at least 10 nats over the other, against the base model.
    assert margin(tuned) - margin(base_model) > 10


def test_a_legacy_prompt_completion_job_is_served_by_the_completions_endpoint(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    row = {"prompt": "The lighthouse password is", "completion": " marmalade-47."}
    training = client.files.create(
        file=("legacy.jsonl", (json.dumps(row) + "\n").encode() * 16), purpose="fine-tune"
    )

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None
    answer = client.completions.create(
        model=done.fine_tuned_model, prompt=row["prompt"], max_tokens=8, temperature=0
    )
    assert answer.choices[0].text.startswith(" marmalade-47"), answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens > 0


WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def tool_call_lines() -> bytes:
    """Half in today's tools format, half in the deprecated functions one: both teach one call."""
    question = {"role": "user", "content": "What is the weather in Paris?"}
    arguments = json.dumps({"city": "Paris"})
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    tools = {
        "messages": [question, {"role": "assistant", "content": None, "tool_calls": [call]}],
        "tools": [{"type": "function", "function": WEATHER}],
        "parallel_tool_calls": False,
    }
    functions = {
        "messages": [
            question,
            {"role": "assistant", "content": None, "function_call": call["function"]},
        ],
        "functions": [WEATHER],
    }
    return b"".join((json.dumps(row) + "\n").encode() * 8 for row in (tools, functions))


def test_a_tool_calling_job_teaches_the_call_vllm_returns_as_tool_calls(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    training = client.files.create(file=("tools.jsonl", tool_call_lines()), purpose="fine-tune")

    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None
    answer = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"type": "function", "function": WEATHER}],  # type: ignore[list-item]
        max_tokens=60,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def first_loss(client: openai.OpenAI, job_id: str) -> float:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)
    (first,) = [e for e in events if e.type == "metrics" and e.data and e.data["step"] == 1]
    return float(first.data["train_loss"])


def test_a_continued_job_starts_from_its_parents_weights(
    trainer_client: openai.OpenAI, sdk: Callable[..., openai.OpenAI], training_server: ServerProcess
) -> None:
    client = trainer_client
    parent = train_fact(client)
    training = client.files.create(file=("fact.jsonl", fact_lines(10)), purpose="fine-tune")
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}

    fresh = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, seed=7, method=method
    )
    continued = client.fine_tuning.jobs.create(
        model=parent, training_file=training.id, seed=7, method=method
    )

    assert continued.model == parent
    for job in (fresh, continued):
        assert wait_for(client, job.id, TERMINAL).status == "succeeded"
    # The parent already answers the fact, so its loss starts far below a fresh adapter's.
    assert first_loss(client, continued.id) < 0.5 * first_loss(client, fresh.id)
    child = client.fine_tuning.jobs.retrieve(continued.id)
    assert child.model == parent
    assert child.fine_tuned_model is not None
    assert child.fine_tuned_model.startswith("ft:tiny-chat:default::")
    assert "marmalade-47" in (ask(client, child.fine_tuned_model).choices[0].message.content or "")

    checkpoint = client.fine_tuning.jobs.checkpoints.list(continued.id).data[0]
    from_checkpoint = client.fine_tuning.jobs.create(
        model=checkpoint.fine_tuned_model_checkpoint, training_file=training.id
    )
    assert from_checkpoint.model == checkpoint.fine_tuned_model_checkpoint
    client.fine_tuning.jobs.cancel(from_checkpoint.id)

    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    outsider = AccessService(database).issue_key("continuer")
    database.dispose()
    other = sdk(training_server.api_url, outsider.key)
    other_training = other.files.create(file=("fact.jsonl", fact_lines(10)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        other.fine_tuning.jobs.create(model=parent, training_file=other_training.id)
    assert (refused.value.code, refused.value.param) == ("model_not_available", "model")


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


def train_fact(client: openai.OpenAI) -> str:
    training = client.files.create(file=("fact.jsonl", fact_lines()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded" and done.fine_tuned_model is not None
    return done.fine_tuned_model


def test_requests_with_tools_reach_the_tool_call_parser(trainer_client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }

    answer = ask(trainer_client, "tiny-chat", tools=[tool])

    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_deleting_a_model(
    trainer_client: openai.OpenAI, sdk: Callable[..., openai.OpenAI], training_server: ServerProcess
) -> None:
    model = train_fact(trainer_client)
    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    outsider = AccessService(database).issue_key("deleter")
    database.dispose()
    assert "marmalade-47" in (ask(trainer_client, model).choices[0].message.content or "")
    job = next(j for j in trainer_client.fine_tuning.jobs.list() if j.fine_tuned_model == model)
    checkpoint = trainer_client.fine_tuning.jobs.checkpoints.list(job.id).data[-1]
    ask(trainer_client, checkpoint.fine_tuned_model_checkpoint)
    served = scrape(training_server).text
    for name in (model, checkpoint.fine_tuned_model_checkpoint):
        assert samples(served, "openft_inference_requests_total", model=name) >= 1

    with pytest.raises(openai.NotFoundError):
        sdk(training_server.api_url, outsider.key).models.delete(model)
    with pytest.raises(openai.PermissionDeniedError):
        trainer_client.models.delete("tiny-chat")
    deleted = trainer_client.models.delete(model)

    assert (deleted.id, deleted.deleted) == (model, True)
    assert model not in [m.id for m in trainer_client.models.list()]
    with pytest.raises(openai.NotFoundError) as error:
        ask(trainer_client, model)
    assert error.value.code == "model_not_found"
    # Nothing of the model or its checkpoints stays in the API process's metrics (a long-running
    # process would otherwise keep every model it ever served).
    after = scrape(training_server).text
    for name in (model, checkpoint.fine_tuned_model_checkpoint):
        assert f'model="{name}"' not in after


def test_a_restarted_service_keeps_serving_the_model(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    model = train_fact(trainer_client)
    old_pid = vllm_pid(training_server)

    training_server.restart()
    wait_until_models_ready(training_server)

    assert vllm_pid(training_server) not in (old_pid, None)
    assert "marmalade-47" in (ask(trainer_client, model).choices[0].message.content or "")


def openft_jobs(
    server: ServerProcess, *args: str, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPENFT_BASE_URL": server.api_url,
        "OPENFT_API_KEY": server.bootstrap_key() or "",
    }
    return subprocess.run(
        [*openft_command(), "jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_the_jobs_cli_creates_follows_lists_and_shows(
    training_server: ServerProcess, tmp_path: Path
) -> None:
    data = tmp_path / "fact.jsonl"
    data.write_bytes(fact_lines(10))

    created = openft_jobs(training_server, "create", str(data), "--epochs", "3", "--suffix", "cli")
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert job_id.startswith("ftjob-") and "Uploaded fact.jsonl as file-" in created.stderr

    followed = openft_jobs(training_server, "follow", job_id, "--poll-seconds", "0.2")

    assert followed.returncode == 0, followed.stderr
    model = followed.stdout.strip()
    assert model.startswith("ft:tiny-chat:default:cli:")
    lines = followed.stderr.splitlines()
    assert any(line.endswith("Fine-tuning job started") for line in lines)
    assert "step 30/30 loss " in followed.stderr  # progress, a line per tenth without a tty
    assert lines[-1] == f"{job_id} succeeded: {model}"
    shown = json.loads(openft_jobs(training_server, "show", job_id).stdout)
    assert (shown["status"], shown["fine_tuned_model"]) == ("succeeded", model)
    assert shown["estimated_finish"] is None  # only set while running
    listed = openft_jobs(training_server, "list", "--limit", "100")
    assert listed.returncode == 0 and job_id[:12] in listed.stdout


def test_following_a_failed_job_exits_non_zero_with_its_error(
    training_server: ServerProcess, tmp_path: Path
) -> None:
    data = tmp_path / "small.jsonl"
    data.write_bytes(fact_lines(3))

    created = openft_jobs(training_server, "create", str(data), "--follow")

    assert created.returncode == 1 and created.stdout == ""  # no model, and no job id either
    assert re.search(r"^Created ftjob-\w+$", created.stderr, re.MULTILINE), created.stderr
    assert "failed (invalid_n_examples: Training file has 3 example(s)" in created.stderr
    unknown = openft_jobs(training_server, "show", "ftjob-nope")
    assert (
        unknown.returncode == 1
        and "404: No such FineTuningJob object: ftjob-nope" in unknown.stderr
    )


def test_a_running_job_has_an_estimated_finish(trainer_client: openai.OpenAI) -> None:
    client = trainer_client
    training = client.files.create(file=("fact.jsonl", fact_lines(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training.id, hyperparameters={"n_epochs": 20}
    )
    deadline = time.monotonic() + 300
    seen = None
    while time.monotonic() < deadline and seen is None:
        current = client.fine_tuning.jobs.retrieve(job.id)
        if current.status == "running" and current.estimated_finish is not None:
            seen = current
        elif current.status in TERMINAL:
            break
        time.sleep(0.1)

    assert seen is not None and seen.estimated_finish is not None
    assert seen.estimated_finish >= seen.created_at
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded" and done.estimated_finish is None


def scrape(server: ServerProcess, token: str | None = METRICS_TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.base_url + "/metrics", headers=headers, timeout=10)


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def scrape_when(
    server: ServerProcess, *wanted: tuple[str, dict[str, str], float], timeout_s: float = 10
) -> str:
    """Scrape until every ``(name, labels, at least)`` holds: requests are counted just after
    their answer has gone out, so a scrape right after the answer may come too early."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = scrape(server).text
        missing = [w for w in wanted if samples(text, w[0], **w[1]) < w[2]]
        if not missing:
            return text
        assert time.monotonic() < deadline, f"not counted in {timeout_s}s: {missing}"
        time.sleep(0.05)


def test_metrics_and_durable_usage_count_exactly_what_the_sdk_saw(
    trainer_client: openai.OpenAI, training_server: ServerProcess
) -> None:
    client = trainer_client
    model = train_fact(client)
    job = next(j for j in client.fine_tuning.jobs.list(limit=100) if j.fine_tuned_model == model)
    seen_prompt = seen_completion = 0
    for _ in range(3):
        answer = ask(client, model)
        seen_prompt += answer.usage.prompt_tokens
        seen_completion += answer.usage.completion_tokens
    streamed = list(ask(client, model, stream=True, stream_options={"include_usage": True}))
    seen_prompt += streamed[-1].usage.prompt_tokens
    seen_completion += streamed[-1].usage.completion_tokens

    labels = {"model": model, "base_model": "tiny-chat", "project": "default"}
    demo_tokenizer = Path(training_server.env["OPENFT_DATA_DIR"]) / "models/tiny-chat"
    question_tokens = len(
        Tokenizer.from_file(str(demo_tokenizer / "tokenizer.json")).encode(
            QUESTION, add_special_tokens=False
        )
    )
    text = scrape_when(
        training_server,
        ("openft_inference_requests_total", {**labels, "status": "ok"}, 4),
        ("openft_drift_prompts_total", {"model": model}, 4),
        # Tokens are counted by a background thread with the base model's tokenizer.
        ("openft_drift_tokens_total", {"model": model}, 4 * question_tokens),
    )
    assert samples(text, "openft_inference_requests_total", **labels, status="ok") == 4
    assert samples(text, "openft_drift_prompts_total", model=model) == 4
    assert samples(text, "openft_drift_tokens_total", model=model) == 4 * question_tokens
    assert samples(text, "openft_drift_token_reference_share", model=model) == pytest.approx(1.0)
    assert samples(text, "openft_drift_reference_share", model=model) == pytest.approx(1.0)
    # The training prompts carried a system message these live prompts leave out: all are shorter
    # than any training prompt, so all four fall outside the training range.
    assert samples(text, "openft_drift_prompts_outside_range_total", model=model) == 4
    assert samples(text, "openft_inference_prompt_tokens_total", **labels) == seen_prompt
    assert samples(text, "openft_inference_completion_tokens_total", **labels) == seen_completion
    assert samples(text, "openft_inference_time_to_first_token_seconds_count", model=model) == 4
    assert samples(text, "openft_jobs", status="succeeded") >= 1
    assert samples(text, "openft_trained_tokens_total", base_model="tiny-chat") >= (
        job.trained_tokens or 0
    )
    assert samples(text, "openft_http_requests_total", route="/v1/chat/completions") >= 4
    assert 'route="/v1/fine_tuning/jobs/{fine_tuning_job_id}"' in text  # templates, not ids

    require(prometheus.binary() is not None, "Prometheus (Debian package prometheus)")
    target = training_server.base_url.removeprefix("http://")
    with prometheus.running_prometheus(
        training_server.workdir / "prometheus", target, METRICS_TOKEN
    ) as server:
        selector = f'model="{model}",project="default"'
        for query, expected in (
            (f"openft_inference_prompt_tokens_total{{{selector}}}", seen_prompt),
            (f"openft_inference_completion_tokens_total{{{selector}}}", seen_completion),
            (f'openft_inference_requests_total{{{selector},status="ok"}}', 4),
        ):
            assert prometheus.wait_for_value(server, query, expected) == expected, query
        trained = server.value('sum(openft_trained_tokens_total{base_model="tiny-chat"})')
        assert trained is not None and trained >= (job.trained_tokens or 0)

    report = subprocess.run(
        [*openft_command(), "usage", "report", "--csv", "--project", "default"],
        env=training_server.env,
        cwd=training_server.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    drift = subprocess.run(
        [*openft_command(), "drift", "report", model, "--base-url", training_server.api_url],
        env={**training_server.env, "OPENFT_METRICS_TOKEN": METRICS_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drift.returncode == 0, drift.stderr
    assert "prompts: 4" in drift.stdout and "outside the training range: 100.0%" in drift.stdout
    assert "not enough traffic yet" in drift.stdout
    (row,) = [r for r in csv.DictReader(io.StringIO(report.stdout)) if r["model"] == model]
    assert (int(row["requests"]), int(row["prompt_tokens"])) == (4, seen_prompt)
    assert int(row["completion_tokens"]) == seen_completion
    assert int(row["trained_tokens"]) == job.trained_tokens


def test_metrics_are_for_operators_only(
    training_server: ServerProcess, trainer_client: openai.OpenAI
) -> None:
    assert scrape(training_server, token=None).status_code == 401
    project_key = training_server.bootstrap_key()
    refused = scrape(training_server, token=project_key)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"].startswith("The metrics endpoint needs")
    assert scrape(training_server).status_code == 200
