"""The batch runner against real databases (SQLite, PostgreSQL) and a local blob store, with a
scripted model gateway (the real one is driven in ``tests/e2e/test_batches.py``): lines in
flight stay within the per-base-model bound, a model server that is down is waited for, a
batch past its window ends ``expired`` with every line in the error file, and a runner that
lost its lease writes nothing more."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from fastapi.responses import JSONResponse, Response
from sqlalchemy import update

from service.app import AppState
from service.auth.principal import Principal
from service.batches import repository, runner
from service.batches.runner import BATCH_PRIORITY, BatchRunner
from service.batches.schemas import TERMINAL, CreateBatchRequest
from service.blobstore.keys import file_key
from service.db.models import Batch
from service.errors import ServiceUnavailableError
from service.responses.service import ResponsesService


class ScriptedGateway:
    """Answers chat requests after a pause, counting lines in flight per base model; the first
    ``down`` requests find the model server down (503)."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []

    async def forward(self, principal: Principal, path: str, body: dict[str, Any]) -> Response:
        if self.down > 0:
            self.down -= 1
            raise ServiceUnavailableError("The model server is starting; retry shortly.")
        base = body["model"].split(":")[1] if body["model"].startswith("ft:") else body["model"]
        self.in_flight[base] += 1
        self.most[base] = max(self.most[base], self.in_flight[base])
        self.bodies.append(body)
        await asyncio.sleep(0.02)
        self.in_flight[base] -= 1
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        answer = {"object": "chat.completion", "model": body["model"], "usage": usage}
        return JSONResponse(answer)

    async def usage_written(self) -> None:
        """Nothing to write: the scripted answers are not counted."""


def batch_runner(state: AppState, gateway: ScriptedGateway) -> BatchRunner:
    settings = state.settings.model_copy(update={"batch_concurrency_per_model": 2})
    responses = ResponsesService(state.db, gateway, settings)  # type: ignore[arg-type]
    return BatchRunner(
        state.db, state.blobs, gateway, state.limiter, responses,  # type: ignore[arg-type]
        state.stored_completions, state.metrics, settings,
    )  # fmt: skip


def create(state: AppState, owner: Principal, models: list[str]) -> str:
    rows = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}}
        for i, model in enumerate(models)
    ]  # fmt: skip
    blob = state.blobs.stage()
    blob.write("".join(json.dumps(row) + "\n" for row in rows).encode())
    file = state.files.store(owner, blob, purpose="batch", filename="b.jsonl", expires_at=None)
    request = CreateBatchRequest(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return str(state.batches.create(owner, request)["id"])


def run_to_the_end(
    state: AppState, worker: BatchRunner, owner: Principal, batch_id: str
) -> dict[str, Any]:
    async def until_done() -> dict[str, Any]:
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                batch = state.batches.retrieve(owner, batch_id)
                if batch["status"] in TERMINAL:
                    return batch
                await asyncio.sleep(0.05)
            raise AssertionError(f"{batch_id} did not end: {batch}")
        finally:
            task.cancel()
            await worker.aclose()

    return asyncio.run(until_done())


def lines_of(state: AppState, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = b"".join(state.blobs.read(file_key(file_id)))
    return [orjson.loads(line) for line in content.splitlines()]


@pytest.fixture
def owner(state: AppState) -> Principal:
    state.blobs.prepare()
    issued = state.access.issue_key("batches")
    return Principal(issued.project_id, issued.project_slug, issued.key_id)


def test_lines_stay_within_the_bound_per_base_model_and_wait_out_a_down_server(
    state: AppState, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RETRY_WAIT_S", 0.01)
    gateway = ScriptedGateway(down=3)
    models = ["tiny-chat", f"ft:tiny-chat:{owner.project_slug}::abc", "other-base"] * 8
    batch_id = create(state, owner, models)

    done = run_to_the_end(state, batch_runner(state, gateway), owner, batch_id)

    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 24, "completed": 24, "failed": 0}
    assert done["usage"]["input_tokens"] == 24 * 5 and done["usage"]["output_tokens"] == 24 * 2
    assert gateway.most["tiny-chat"] == 2  # the base and its ft: model share the bound
    assert gateway.most["other-base"] <= 2
    assert {body["priority"] for body in gateway.bodies} == {BATCH_PRIORITY}
    outputs = lines_of(state, done["output_file_id"])
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"c{i}" for i in range(24))
    assert done["error_file_id"] is None


def test_a_batch_past_its_window_expires_with_every_line_in_the_error_file(
    state: AppState, owner: Principal
) -> None:
    batch_id = create(state, owner, ["tiny-chat"] * 3)
    with state.db.write() as session:
        session.execute(update(Batch).where(Batch.id == batch_id).values(expires_at=0))
    gateway = ScriptedGateway()

    done = run_to_the_end(state, batch_runner(state, gateway), owner, batch_id)

    assert done["status"] == "expired" and done["expired_at"] is not None, done
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert gateway.bodies == [] and done["output_file_id"] is None
    errors = lines_of(state, done["error_file_id"])
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
        (f"c{i}", None, "batch_expired") for i in range(3)
    ]


def test_a_runner_that_lost_its_lease_writes_nothing_more(
    state: AppState, owner: Principal
) -> None:
    batch_id = create(state, owner, ["tiny-chat"])
    first = repository.claim(state.db, "runner-a", 30)
    assert first is not None and first.batch_id == batch_id
    with state.db.write() as session:  # runner-a stops renewing; its lease runs out
        session.execute(update(Batch).where(Batch.id == batch_id).values(lease_expires_at=0))
    second = repository.claim(state.db, "runner-b", 30)
    assert second is not None and second.attempt == first.attempt + 1

    assert repository.renew(state.db, first, 30) is None
    with pytest.raises(repository.BatchLeaseLostError), repository.held(state.db, first):
        pass
    assert repository.renew(state.db, second, 30) == "validating"
