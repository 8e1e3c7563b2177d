"""Serving many adapters: tokens/s with 1, 8 and 32 distinct fine-tuned models interleaved.

`openft serve` (worker, vLLM, demo model) trains one small job; its adapter is then registered
again as `--registered` fine-tuned models (copies of the job row, adapter blobs hard-linked), as
many users' models would be. Streamed chat requests with fixed output length go through the
gateway, `--concurrency` at a time, to the base model, to one adapter (the baseline), and to 8
and 32 adapters in turn, after each adapter has been loaded once. Bar: 8 and 32 adapters >= 0.95x
one adapter. Also: the cold first request to a registered adapter that is not yet on vLLM's disk.
`--base-model PATH` serves that model instead of the demo model; `--label` suffixes the results.
Run: `.venv/bin/python bench/adapters.py [--registered 1000] [--requests 64] [--base-model PATH]
[--label gpu]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from gateway_overhead import round_of
from openai import OpenAI
from results import print_table, write_result
from serving import ServedBase, add_serving_arguments, result_name, start_openft, stop
from sqlalchemy import select

from service.db.database import Database
from service.db.models import FineTuningJob
from service.ids import new_job_id

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
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-adapters-"))
    server, base, key = start_openft(workdir, env=served.env)
    headers = {"authorization": f"Bearer {key}"}
    try:
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
        for _ in range(args.rounds):
            for label, models in mixes.items():
                rate, _, _ = asyncio.run(
                    round_of(base, headers, args.requests, args.concurrency, args.tokens, models)
                )
                rates[label].append(rate)
        cold, warm = cold_and_warm(base, headers, names[-1], args.tokens)
    finally:
        stop(server)
    rate = {label: statistics.median(values) for label, values in rates.items()}
    single = rate["1 adapter (baseline)"]
    print(f"base model {served.describe()}; {len(names) + 1} fine-tuned models registered; "
          f"{args.concurrency} concurrent, "
          f"{args.tokens} output tokens per request")  # fmt: skip
    print_table(
        ("models", "tokens/s", "vs 1 adapter"),
        [(label, f"{value:.1f}", f"{value / single:.2f}x") for label, value in rate.items()],
    )
    print(f"cold first request (publish + load + answer): {cold * 1e3:.0f} ms; "
          f"next request {warm * 1e3:.0f} ms")  # fmt: skip
    write_result(
        result_name("adapters", args.label),
        {
            "base_model": served.describe(),
            "registered": len(names) + 1, "concurrency": args.concurrency,
            "tokens_per_second": {k: round(v, 2) for k, v in rate.items()},
            "vs_single_adapter": {k: round(v / single, 3) for k, v in rate.items()},
            "cold_first_request_ms": round(cold * 1e3, 1),
            "warm_request_ms": round(warm * 1e3, 1),
        },
    )  # fmt: skip


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
