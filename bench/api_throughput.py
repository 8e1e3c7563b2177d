"""Retrieve throughput under 64 concurrent clients, against a trivial endpoint of the same server.

`openft serve --workers 0 --no-vllm` runs pinned to CPU 0; this process, the load generator,
pins itself to CPU 1. 64 clients on keep-alive connections call `GET /v1/files/{id}` (a key
check and a database read: the real work) and, as the baseline, `GET /healthz` (FastAPI and
uvicorn alone: the machine's limit for this server), in alternating rounds. Bar: >= 0.5x.
Run: `.venv/bin/python bench/api_throughput.py [--seconds 10] [--database-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from results import percentile, print_table, write_result
from serving import start_openft, stop

CLIENTS = 64


async def hammer(url: str, headers: dict[str, str], seconds: float) -> tuple[int, list[float]]:
    """Requests completed by CLIENTS concurrent clients in ``seconds``, and their latencies.

    aiohttp, not httpx: on one core httpx's client, not the server, would be the limit.
    """
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def one_client() -> None:
            while (now := time.perf_counter()) < deadline:
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200, await response.text()
                latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return len(latencies), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[0], cores[-1]
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-api-"))
    extra = {"OPENFT_DATABASE_URL": args.database_url} if args.database_url else {}
    server, base, key = start_openft(
        workdir, "--workers", "0", "--no-vllm", wait_for_models=False, env=extra,
        pin_to=server_core,
    )  # fmt: skip
    os.sched_setaffinity(0, {client_core})
    try:
        headers = {"authorization": f"Bearer {key}"}
        uploaded = httpx.post(
            base + "/v1/files", headers=headers, data={"purpose": "user_data"},
            files={"file": ("notes.txt", b"hello")},
        ).json()  # fmt: skip
        targets = {
            "GET /healthz (baseline)": base + "/healthz",
            "GET /v1/files/{id}": f"{base}/v1/files/{uploaded['id']}",
        }
        asyncio.run(hammer(targets["GET /healthz (baseline)"], headers, 2))  # warm up
        rates: dict[str, list[float]] = {label: [] for label in targets}
        latencies: dict[str, list[float]] = {label: [] for label in targets}
        for _ in range(args.rounds):
            for label, url in targets.items():
                done, seen = asyncio.run(hammer(url, headers, args.seconds))
                rates[label].append(done / args.seconds)
                latencies[label] += seen
    finally:
        stop(server)
    rate = {label: statistics.median(values) for label, values in rates.items()}
    baseline = rate["GET /healthz (baseline)"]
    rows = [
        (label, f"{rate[label]:,.0f}", f"{rate[label] / baseline:.2f}x",
         f"{percentile(latencies[label], 0.5) * 1e3:.1f}",
         f"{percentile(latencies[label], 0.99) * 1e3:.1f}")
        for label in targets
    ]  # fmt: skip
    print(f"{CLIENTS} clients, server on CPU {server_core}, load generator on CPU {client_core}")
    print_table(("endpoint", "req/s", "vs baseline", "p50 ms", "p99 ms"), rows)
    ratio = rate["GET /v1/files/{id}"] / baseline
    print(f"retrieve throughput: {ratio:.2f}x the trivial endpoint (bar >= 0.5x)")
    write_result(
        "api_throughput",
        {
            "clients": CLIENTS,
            "database": "PostgreSQL" if args.database_url else "SQLite",
            "requests_per_second": {label: round(value, 1) for label, value in rate.items()},
            "retrieve_vs_trivial": round(ratio, 3),
        },
    )


if __name__ == "__main__":
    main()
