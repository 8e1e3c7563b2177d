"""Several API processes on one port (``openft serve --api-workers 2``).

Whichever process answers a scrape, ``/metrics`` must show what all of them counted
(prometheus-client's multiprocess mode). With vLLM, the parent runs the vLLM child and the API
processes reach it by URL; here that server is a second replica of the training server (same
database, blobs and base model), so it also serves models another replica trained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from inference.upstreams import WATCH_INTERVAL_S
from service.auth.service import AccessService
from service.db.database import Database
from tests.e2e.conftest import METRICS_TOKEN
from tests.e2e.test_fine_tune_end_to_end import (
    ask,
    samples,
    scrape,
    scrape_when,
    train_fact,
)
from tests.support.server import ServerProcess, start_server, wait_until_models_ready

MULTIPROCESS_ENV = {"OPENFT_METRICS_TOKEN": METRICS_TOKEN}


def metric_file_pids(server: ServerProcess) -> set[str]:
    """The API processes that have written metrics (one file per kind and process)."""
    folder = Path(server.env["OPENFT_DATA_DIR"]) / "run" / "prometheus"
    return {path.stem.rsplit("_", 1)[-1] for path in folder.glob("*.db")}


@pytest.fixture(scope="module")
def api_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("serve-api-processes"),
        MULTIPROCESS_ENV,
        *("--api-workers", "2", "--workers", "0", "--no-vllm"),
    )
    yield server
    server.stop()


def test_every_scrape_counts_the_requests_of_every_process(api_processes: ServerProcess) -> None:
    key = api_processes.bootstrap_key()
    assert key is not None

    def list_models(_: int) -> int:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}) as client:
            return client.get(api_processes.api_url + "/models").status_code

    sent = 0
    deadline = time.monotonic() + 90  # on a busy machine the second process starts late
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Fresh connections, several at once: the kernel hands them to both processes.
        while len(metric_file_pids(api_processes)) < 2 and time.monotonic() < deadline:
            assert set(pool.map(list_models, range(40))) == {200}
            sent += 40
    assert len(metric_file_pids(api_processes)) == 2, "one process answered every request"

    labels = {"route": "/v1/models", "method": "GET", "status": "200"}
    for _ in range(6):  # each scrape may be answered by either process
        text = scrape(api_processes).text
        assert samples(text, "openft_http_requests_total", **labels) == sent
        assert samples(text, "openft_http_request_duration_seconds_count", route="/v1/models") == (
            sent
        )
    assert scrape(api_processes, token=None).status_code == 401


@pytest.fixture(scope="module")
def replica(
    training_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A second node over the training server's database and blobs, serving with 2 processes."""
    settings = training_server.settings()
    env = {
        **MULTIPROCESS_ENV,
        "OPENFT_DATABASE_URL": settings.database_url,
        "OPENFT_BLOB_DIR": str(settings.blob_root),
        "OPENFT_BASE_MODELS": json.dumps([settings.demo_model.model_dump()]),
    }
    server = start_server(
        tmp_path_factory.mktemp("serve-replica"), env, "--api-workers", "2", "--workers", "0"
    )
    try:
        wait_until_models_ready(server)
        yield server
    finally:
        server.stop()


def test_a_replica_with_two_processes_serves_and_counts_a_model_trained_elsewhere(
    replica: ServerProcess,
    trainer_client: openai.OpenAI,
    sdk: Callable[..., openai.OpenAI],
) -> None:
    model = train_fact(trainer_client)
    key = trainer_client.api_key  # the replica shares the training server's projects
    seen_prompt = seen_completion = 0
    requests = 8
    for _ in range(requests):  # a new client, so a new connection, for each request
        answer = ask(sdk(replica.api_url, key), model)
        assert "marmalade-47" in (answer.choices[0].message.content or "")
        seen_prompt += answer.usage.prompt_tokens
        seen_completion += answer.usage.completion_tokens

    labels = {"model": model, "base_model": "tiny-chat", "project": "default"}
    scrape_when(replica, ("openft_inference_requests_total", {"model": model}, requests))
    for _ in range(6):  # each scrape may be answered by either process
        text = scrape(replica).text
        assert samples(text, "openft_inference_requests_total", **labels, status="ok") == (requests)
        assert samples(text, "openft_inference_prompt_tokens_total", **labels) == seen_prompt
        assert samples(text, "openft_inference_completion_tokens_total", **labels) == (
            seen_completion
        )
    # Each process's watcher notes what vLLM holds every WATCH_INTERVAL_S: within a few
    # intervals, every scrape (whichever process answers) counts the one adapter.
    deadline = time.monotonic() + 6 * WATCH_INTERVAL_S
    in_a_row = 0
    while in_a_row < 6:
        text = scrape(replica).text
        counted = samples(text, "openft_loaded_adapters", base_model="tiny-chat")
        in_a_row = in_a_row + 1 if counted == 1 else 0
        assert counted in (0, 1) and time.monotonic() < deadline, counted
        time.sleep(0.1)


def test_a_key_revoked_elsewhere_is_refused_by_every_process_at_once(
    api_processes: ServerProcess,
) -> None:
    key = api_processes.cli("keys", "create", "--project", "revoked-soon")
    database = Database(f"sqlite:///{api_processes.env['OPENFT_DATA_DIR']}/openft.db")
    key_id = AccessService(database).authenticate(f"Bearer {key}", None).key_id
    database.dispose()

    def statuses() -> list[int]:
        """One request per new connection, so both processes answer some."""
        return [
            httpx.get(
                f"{api_processes.api_url}/models",
                headers={"authorization": f"Bearer {key}", "connection": "close"},
            ).status_code
            for _ in range(24)
        ]

    assert set(statuses()) == {200}  # each process has checked the key and remembers it
    api_processes.cli("keys", "revoke", key_id)  # a third process
    assert set(statuses()) == {401}
