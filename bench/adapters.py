"""Serving many adapters: tokens/s with 1, 8 and 32 distinct fine-tuned models interleaved.

`openft serve` (worker, vLLM, demo model) trains one small job; its adapter is then registered
again as `--registered` fine-tuned models (copies of the job row, adapter blobs hard-linked), as
many users' models would be. Streamed chat requests with fixed output length go through the
gateway, `--concurrency` at a time, to the base model, to one adapter (the baseline), and to 8
and 32 adapters in turn, after each adapter has been loaded once. Bar: 8 and 32 adapters >= 0.95x
one adapter. Also: the cold first request to a registered adapter that is not yet on vLLM's disk.
`--base-model PATH` serves that model instead of the demo model; `--label` suffixes the results.
`--replicas K` serves the base model from K vLLM replicas instead (`openft serve --no-vllm`,
`OPENFT_VLLM_URLS` listing them, each replica on its own core and with its own adapter cache,
pulling adapters from the blob store through OpenFT's resolver), so the mixes measure routing:
one adapter stays on one replica, 32 spread over all of them. Results: `adapters_replicas`.
Run: `.venv/bin/python bench/adapters.py [--registered 1000] [--requests 64] [--base-model PATH]
[--label gpu] [--replicas 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from gateway_overhead import round_of
from openai import OpenAI
from results import print_table, write_result
from serving import (
    ServedBase,
    add_serving_arguments,
    free_port,
    result_name,
    start_openft,
    stop,
)
from sqlalchemy import select

from inference.vllm_process import VLLMProcess
from service.db.database import Database
from service.db.models import FineTuningJob
from service.ids import new_job_id
from service.settings import DEMO_MODEL_NAME, Settings

ROW = {
    "messages": [
        {"role": "user", "content": "What is the code word?"},
        {"role": "assistant", "content": "The code word is lantern-9."},
    ]
}


def train_one(client: OpenAI, model: str) -> str:
    data = client.files.create(
        file=("d.jsonl", (json.dumps(ROW) + "\n").encode() * 10), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model=model, training_file=data.id, hyperparameters={"n_epochs": 1}
    )
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded", "failed", "cancelled",
    ):  # fmt: skip
        time.sleep(0.2)
    assert job.status == "succeeded", job.error
    return job.id


def register_copies(data_dir: Path, job_id: str, count: int, base_model: str) -> list[str]:
    """``count`` more fine-tuned models with the job's adapter; returns their names."""
    db = Database(f"sqlite:///{data_dir / 'openft.db'}")
    source = data_dir / "blobs" / "adapters" / job_id / "final"
    names = []
    with db.write() as session:
        original = session.scalars(select(FineTuningJob).where(FineTuningJob.id == job_id)).one()
        columns = {
            c.key: getattr(original, c.key)
            for c in FineTuningJob.__table__.columns
            if c.key not in ("seq", "id", "fine_tuned_model")
        }
        for index in range(count):
            copy_id = new_job_id()
            name = f"ft:{base_model}:bench::copy{index:05d}"
            session.add(FineTuningJob(id=copy_id, fine_tuned_model=name, **columns))
            target = data_dir / "blobs" / "adapters" / copy_id / "final"
            target.mkdir(parents=True)
            for path in source.iterdir():
                os.link(path, target / path.name)
            names.append(name)
    db.dispose()
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1, help="vLLM replicas of the base model")
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-adapters-"))
    with serving(workdir, served, args.replicas) as (base, key, replica_urls):
        rate, shares, cold, warm, names = measure(args, served, workdir, base, key, replica_urls)
    single = rate["1 adapter (baseline)"]
    where = f"; {args.replicas} vLLM replicas" if args.replicas > 1 else ""
    print(f"base model {served.describe()}{where}; {len(names) + 1} fine-tuned models registered; "
          f"{args.concurrency} concurrent, "
          f"{args.tokens} output tokens per request")  # fmt: skip
    print_table(
        ("models", "tokens/s", "vs 1 adapter"),
        [(label, f"{value:.1f}", f"{value / single:.2f}x") for label, value in rate.items()],
    )
    if shares:
        print("requests per replica: " + "; ".join(
            f"{label} {' / '.join(f'{share:.0%}' for share in split)}"
            for label, split in shares.items()
        ))  # fmt: skip
    print(f"cold first request (publish + load + answer): {cold * 1e3:.0f} ms; "
          f"next request {warm * 1e3:.0f} ms")  # fmt: skip
    name = "adapters" if args.replicas == 1 else "adapters_replicas"
    write_result(
        result_name(name, args.label),
        {
            "base_model": served.describe(),
            "replicas": args.replicas,
            "registered": len(names) + 1, "concurrency": args.concurrency,
            "tokens_per_second": {k: round(v, 2) for k, v in rate.items()},
            "vs_single_adapter": {k: round(v / single, 3) for k, v in rate.items()},
            **({"requests_per_replica": shares} if shares else {}),
            "cold_first_request_ms": round(cold * 1e3, 1),
            "warm_request_ms": round(warm * 1e3, 1),
        },
    )  # fmt: skip


def measure(
    args: argparse.Namespace,
    served: ServedBase,
    workdir: Path,
    base: str,
    key: str,
    replica_urls: list[str],
) -> tuple[dict[str, float], dict[str, list[float]], float, float, list[str]]:
    """Train, register the copies, then the rounds: tokens/s per mix, each replica's share of
    each mix's requests (with replicas), cold and warm latency."""
    headers = {"authorization": f"Bearer {key}"}
    job_id = train_one(OpenAI(base_url=base + "/v1", api_key=key, max_retries=0), served.name)
    names = register_copies(workdir / "data", job_id, max(args.registered, 33), served.name)
    mixes = {
        "base model": (served.name,),
        "1 adapter (baseline)": (names[0],),
        "8 adapters": tuple(names[:8]),
        "32 adapters": tuple(names[:32]),
    }
    # Each adapter loaded once, then the rounds.
    asyncio.run(round_of(base, headers, 32, 4, 2, tuple(names[:32])))
    rates: dict[str, list[float]] = {label: [] for label in mixes}
    served_by = {label: [0.0] * len(replica_urls) for label in mixes}
    for _ in range(args.rounds):
        for label, models in mixes.items():
            before = [requests_served(url) for url in replica_urls]
            rate, _, _ = asyncio.run(
                round_of(base, headers, args.requests, args.concurrency, args.tokens, models)
            )
            rates[label].append(rate)
            for index, url in enumerate(replica_urls):
                served_by[label][index] += requests_served(url) - before[index]
    cold, warm = cold_and_warm(base, headers, names[-1], args.tokens)
    rate = {label: statistics.median(values) for label, values in rates.items()}
    shares = {
        label: [round(count / (sum(counts) or 1), 3) for count in counts]
        for label, counts in served_by.items()
        if replica_urls
    }
    return rate, shares, cold, warm, names


def requests_served(url: str) -> float:
    """Requests a vLLM server has finished, from its own metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total{")
    )


@contextmanager
def serving(
    workdir: Path, served: ServedBase, replicas: int
) -> Iterator[tuple[str, str, list[str]]]:
    """`openft serve` with its own vLLM, or in front of ``replicas`` vLLM replicas; yields its
    base URL, key and the replicas' URLs (none for its own vLLM), and stops everything after."""
    if replicas == 1:
        server, base, key = start_openft(workdir, env=served.env)
        try:
            yield base, key, []
        finally:
            stop(server)
        return
    data = workdir / "data"
    shared = {
        "OPENFT_DEMO_MODEL_NAME": DEMO_MODEL_NAME,
        **served.env,
        "OPENFT_DATABASE_URL": f"sqlite:///{data / 'openft.db'}",
        "OPENFT_BLOB_DIR": str(data / "blobs"),
        "OPENFT_VLLM_ADAPTERS_FROM_BLOBS": "true",
    }
    openft = str(Path(sys.executable).with_name("openft"))
    with environment({**shared, "OPENFT_DATA_DIR": str(data)}):
        subprocess.run([openft, "models", "create-demo"], check=True)
    processes = [replica(workdir / f"replica-{i}", shared, served.name) for i in range(replicas)]
    urls = {served.name: [p.base_url for p in processes]}
    server, base, key = start_openft(
        workdir, "--no-vllm", wait_for_models=False,
        env={**shared, "OPENFT_VLLM_URLS": json.dumps(urls)},
    )  # fmt: skip
    try:
        for index, process in enumerate(processes):
            start_replica(process, shared, core=index % (os.cpu_count() or 1))
        wait_until_ready(base, processes)
        yield base, key, [p.base_url for p in processes]
    finally:
        stop(server)
        for process in processes:
            process.stop()


def replica(root: Path, env: dict[str, str], name: str) -> VLLMProcess:
    """A vLLM replica of base model ``name`` with a data folder (and adapter cache) of its own;
    ``env`` names the deployment's database and blob store, for its resolver."""
    (root / "data").mkdir(parents=True)
    # The base model's files, as a replica's image or volume would hold them.
    (root / "data" / "models").symlink_to(root.parent / "data" / "models")
    with environment({**env, "OPENFT_DATA_DIR": str(root / "data")}):
        settings = Settings()
    model = settings.base_model(name)
    assert model is not None, name
    process = VLLMProcess(model, settings)
    process.port = free_port()
    return process


def start_replica(process: VLLMProcess, env: dict[str, str], core: int) -> None:
    """Start one replica with the deployment's settings, its model on CPU ``core``."""
    own = {"OPENFT_DATA_DIR": str(process.settings.data_dir)}
    with environment({**env, **own, "VLLM_CPU_OMP_THREADS_BIND": str(core)}):
        process.start()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` added, for what reads its settings from there."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_until_ready(base: str, processes: list[VLLMProcess]) -> None:
    """Until `/readyz` counts every replica ready."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for process in processes:
            if not process.alive():
                raise SystemExit(f"a vLLM replica exited; see {process.logfile}")
        ready = httpx.get(base + "/readyz", timeout=5).json()
        counts = list(ready.get("replicas", {}).values())
        if counts and all(c["ready"] == c["total"] == len(processes) for c in counts):
            return
        time.sleep(1)
    raise SystemExit("the vLLM replicas did not become ready")


def cold_and_warm(
    base: str, headers: dict[str, str], model: str, tokens: int
) -> tuple[float, float]:
    """The first request to ``model`` (not on vLLM's disk yet), then the next one."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": tokens, "temperature": 0}  # fmt: skip
    found = []
    for _ in range(2):
        started = time.perf_counter()
        response = httpx.post(
            base + "/v1/chat/completions", json=body, headers=headers, timeout=120
        )
        assert response.status_code == 200, response.text
        found.append(time.perf_counter() - started)
    return found[0], found[1]


if __name__ == "__main__":
    main()
