"""The Batch API through the official SDK, on the training server (vLLM, the demo model, ``ft:``
models trained here): a 64-line batch over a base and an ``ft:`` model with a malformed line and
a line naming another project's model; a batch cancelled mid-way; a batch of ``/v1/responses``;
a file that fails validation (with line numbers); a server SIGKILLed mid-batch that finishes
after its restart with every ``custom_id`` exactly once and no finished line sent again. Every
body is checked against OpenAI's spec (the ``sdk`` fixture), and so is every output line.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch
from sqlalchemy import func, select

from service.auth.service import AccessService
from service.db.database import Database
from service.db.models import UsageHour
from tests.e2e.test_fine_tune_end_to_end import QUESTION, fact_lines, samples, scrape_when
from tests.e2e.test_responses import trained
from tests.support.server import ServerProcess, start_server, wait_until_models_ready

BASE = "tiny-chat"
CHAT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def chat_line(custom_id: str, model: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": [{"role": "user", "content": QUESTION}],
                 "max_tokens": 4, **body},
    }  # fmt: skip


def upload(client: openai.OpenAI, rows: list[Any]) -> str:
    data = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)
    return client.files.create(file=("batch.jsonl", data), purpose="batch").id


def wait_batch(
    client: openai.OpenAI,
    batch_id: str,
    done: Callable[[Batch], bool] = lambda b: b.status in TERMINAL,
    timeout_s: float = 600,
) -> Batch:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"{batch_id} did not get there in {timeout_s}s: {batch}")


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    info = client.files.retrieve(file_id)
    assert info.purpose == "batch_output"
    lines = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    for output in lines:  # BatchRequestOutput, as api.openai.com writes it
        assert list(output) == ["id", "custom_id", "response", "error"], output
        if output["response"] is not None:
            assert list(output["response"]) == ["status_code", "request_id", "body"]
            assert output["error"] is None
        else:
            assert set(output["error"]) == {"code", "message"}
        assert output["id"].startswith("batch_req_") and len(output["id"]) == 42
        if output["response"] is not None:
            request_id = output["response"]["request_id"]
            assert len(request_id) == 32 and int(request_id, 16) >= 0  # 32 hex, as OpenAI's
    return lines


@pytest.fixture(scope="module")
def keys(training_server: ServerProcess) -> dict[str, str]:
    """The training server's first project's key, and another project's."""
    database = Database(f"sqlite:///{training_server.env['OPENFT_DATA_DIR']}/openft.db")
    other = AccessService(database).issue_key("batches-other").key
    database.dispose()
    key = training_server.bootstrap_key()
    assert key is not None
    return {"mine": key, "other": other}


@pytest.fixture(scope="module")
def models(training_server: ServerProcess, keys: dict[str, str]) -> Iterator[dict[str, str]]:
    """An ft: model of the first project, and one of the other project."""
    url = training_server.api_url
    with (
        openai.OpenAI(base_url=url, api_key=keys["mine"], max_retries=0) as mine,
        openai.OpenAI(base_url=url, api_key=keys["other"], max_retries=0) as other,
    ):
        yield {"mine": trained(mine, fact_lines()), "other": trained(other, fact_lines())}


@pytest.fixture
def client(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI], keys: dict[str, str]
) -> openai.OpenAI:
    return sdk(training_server.api_url, keys["mine"])


def test_a_batch_over_a_base_and_a_fine_tuned_model_completes(
    client: openai.OpenAI,
    sdk: Callable[..., openai.OpenAI],
    training_server: ServerProcess,
    keys: dict[str, str],
    models: dict[str, str],
) -> None:
    rows: list[Any] = [chat_line(f"req-{i}", BASE if i % 2 else models["mine"]) for i in range(62)]
    malformed = chat_line("malformed", BASE)
    del malformed["body"]["messages"]  # a request the endpoint refuses: it runs, and fails
    rows.insert(10, malformed)
    rows.insert(40, chat_line("foreign", models["other"]))
    input_file = upload(client, rows)

    created = client.batches.create(
        input_file_id=input_file, endpoint=CHAT, completion_window="24h",
        metadata={"run": "e2e"},
    )  # fmt: skip

    assert created.id.startswith("batch_") and len(created.id) == 38
    assert (created.status, created.object, created.endpoint) == ("validating", "batch", CHAT)
    assert created.expires_at == created.created_at + 86_400
    assert created.request_counts is not None and created.request_counts.total == 0
    assert created.metadata == {"run": "e2e"} and created.model is None
    done = wait_batch(client, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (64, 62, 2)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.model is None  # three models: none is the batch's

    outputs = file_lines(client, done.output_file_id)
    errors = file_lines(client, done.error_file_id)
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"req-{i}" for i in range(62))
    wanted = {o["custom_id"]: r["body"]["model"] for o in outputs for r in rows
              if isinstance(r, dict) and r["custom_id"] == o["custom_id"]}  # fmt: skip
    for output in outputs:
        response = output["response"]
        assert output["error"] is None and response["status_code"] == 200
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == wanted[output["custom_id"]]
        assert body["usage"]["completion_tokens"] <= 4
    by_id = {e["custom_id"]: e["response"] for e in errors}
    assert set(by_id) == {"malformed", "foreign"}
    assert by_id["malformed"]["status_code"] == 400
    assert by_id["malformed"]["body"]["error"]["message"]
    assert by_id["foreign"]["status_code"] == 404
    assert by_id["foreign"]["body"]["error"]["code"] == "model_not_found"
    assert done.usage is not None
    assert done.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"]
                                          for o in outputs)  # fmt: skip
    assert done.usage.output_tokens == sum(
        o["response"]["body"]["usage"]["completion_tokens"] for o in outputs
    )

    _assert_only_its_project_sees(client, sdk(training_server.api_url, keys["other"]), done)
    # The lines went through the gateway: counted per model, as interactive requests are.
    text = scrape_when(training_server, ("openft_batch_lines_total", {"outcome": "completed"}, 62))
    assert samples(text, "openft_batch_lines_total", outcome="failed") >= 2
    assert samples(text, "openft_inference_requests_total", model=models["mine"]) >= 31


def _assert_only_its_project_sees(client: openai.OpenAI, other: openai.OpenAI, done: Batch) -> None:
    listed = client.batches.list(limit=100)
    assert done.id in [b.id for b in listed.data]
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id or "")
    assert done.id not in [b.id for b in other.batches.list().data]
    with pytest.raises(openai.BadRequestError) as finished:
        client.batches.cancel(done.id)
    assert "completed" in finished.value.message


def test_a_cancelled_batch_keeps_what_finished_and_lists_the_rest(
    client: openai.OpenAI,
) -> None:
    rows = [chat_line(f"line-{i}", BASE, max_tokens=24) for i in range(300)]
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint=CHAT, completion_window="24h"
    )
    running = wait_batch(
        client, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed > 0
    )
    assert running.status == "in_progress"

    cancelling = client.batches.cancel(batch.id)

    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait_batch(client, batch.id, timeout_s=120)
    assert done.status == "cancelled" and done.cancelled_at is not None
    counts = done.request_counts
    assert counts is not None and counts.total == 300
    assert 0 < counts.completed + counts.failed < 300
    outputs = file_lines(client, done.output_file_id)
    errors = file_lines(client, done.error_file_id)
    assert len(outputs) == counts.completed
    not_sent = [e for e in errors if e["response"] is None]
    assert len(errors) == counts.failed + len(not_sent)
    assert len(outputs) + len(errors) == 300
    assert {e["error"]["code"] for e in not_sent} == {"batch_cancelled"}
    ids = [line["custom_id"] for line in outputs + errors]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows)


def test_a_batch_of_responses_stores_them(client: openai.OpenAI) -> None:
    rows = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
         "body": {"model": BASE, "input": f"Say {i}.", "max_output_tokens": 16}}
        for i in range(3)
    ]  # fmt: skip
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint="/v1/responses", completion_window="24h"
    )

    done = wait_batch(client, batch.id)

    assert done.status == "completed" and done.model == BASE, done
    outputs = file_lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == ["r0", "r1", "r2"]
    for output in outputs:
        body = output["response"]["body"]
        assert body["object"] == "response" and body["status"] in ("completed", "incomplete")
        assert client.responses.retrieve(body["id"]).id == body["id"]  # stored, as by default
    assert done.error_file_id is None


def test_a_file_that_cannot_run_fails_with_its_line_numbers(
    server: ServerProcess, make_client: Callable[..., openai.OpenAI], project: Any
) -> None:
    """On every store (SQLite, PostgreSQL, S3): the runner reads the file in each."""
    client = make_client(project.key)
    rows: list[Any] = [
        chat_line("a", BASE),
        b"{not json",
        {**chat_line("b", BASE), "url": "/v1/completions"},
        chat_line("a", BASE),
    ]
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint=CHAT, completion_window="24h"
    )

    done = wait_batch(client, batch.id, timeout_s=60)

    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.data is not None
    assert [(e.code, e.line) for e in done.errors.data] == [
        ("invalid_json_line", 2),
        ("mismatched_url", 3),
        ("duplicate_custom_id", 4),
    ]
    assert done.output_file_id is None and done.error_file_id is None
    assert done.request_counts is not None and done.request_counts.total == 0


def test_bad_batch_requests_are_refused_in_openais_envelope(
    server: ServerProcess, make_client: Callable[..., openai.OpenAI], project: Any
) -> None:
    client = make_client(project.key)
    training = client.files.create(
        file=("t.jsonl", json.dumps({"messages": [{"role": "user", "content": "a"},
              {"role": "assistant", "content": "b"}]}).encode() * 1), purpose="fine-tune",
    )  # fmt: skip
    batch_file = upload(client, [chat_line("a", BASE)])
    refusals: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
        ({"input_file_id": training.id}, openai.BadRequestError, "input_file_id"),
        ({"input_file_id": "file-" + "Z" * 22}, openai.NotFoundError, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, openai.BadRequestError, "endpoint"),
        ({"endpoint": "/v1/nothing"}, openai.BadRequestError, "endpoint"),
        ({"completion_window": "48h"}, openai.BadRequestError, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, openai.BadRequestError, "metadata"),
    ]
    for change, error, param in refusals:
        body = {"input_file_id": batch_file, "endpoint": CHAT, "completion_window": "24h",
                **change}  # fmt: skip
        with pytest.raises(error) as refused:
            client.batches.create(**body)
        assert refused.value.param == param, (change, refused.value.body)
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.retrieve("batch_" + "0" * 32)
    assert missing.value.param == "batch_id"
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_" + "0" * 32)


def test_a_batch_survives_a_sigkilled_server_with_each_line_once(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "serve",
        {"OPENFT_BATCH_LEASE_SECONDS": "6", "OPENFT_BATCH_CONCURRENCY_PER_MODEL": "2"},
        "--workers", "0",
    )  # fmt: skip
    try:
        wait_until_models_ready(server)
        key = server.bootstrap_key()
        assert key is not None
        client = openai.OpenAI(base_url=server.api_url, api_key=key, max_retries=2)
        rows = [chat_line(f"line-{i}", BASE, max_tokens=8) for i in range(150)]
        batch = client.batches.create(
            input_file_id=upload(client, rows), endpoint=CHAT, completion_window="24h"
        )
        wait_batch(
            client, batch.id,
            lambda b: b.request_counts is not None and b.request_counts.completed >= 30,
        )  # fmt: skip

        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server.restart()

        done = wait_batch(client, batch.id)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (150, 0)
        outputs = file_lines(client, done.output_file_id)
        assert sorted(o["custom_id"] for o in outputs) == sorted(r["custom_id"] for r in rows)
        # Finished lines were not sent again: only the (at most 2) lines in flight at the kill.
        database = Database(f"sqlite:///{server.env['OPENFT_DATA_DIR']}/openft.db")
        with database.read() as session:
            sent = session.scalar(
                select(func.sum(UsageHour.requests)).where(UsageHour.model == BASE)
            )
        database.dispose()
        assert 150 <= (sent or 0) <= 152
    finally:
        server.stop()
