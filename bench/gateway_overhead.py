"""What the gateway costs on top of vLLM: the same streamed chat requests, direct and through it.

`openft serve` with its vLLM child and the demo model; the baseline sends the requests straight
to that vLLM server, the other run through `POST /v1/chat/completions` of the API (key check,
model routing, usage and metrics). Fixed prompt, exactly `--tokens` output tokens (`ignore_eos`),
`--concurrency` clients, alternating rounds. Bars: throughput >= 0.95x; < 5 ms added to the
median latency and to the median time to first token. `--base-model PATH` serves that model
instead of the demo model; `--label` suffixes the results.
Run: `.venv/bin/python bench/gateway_overhead.py [--requests 64] [--concurrency 4]
[--base-model PATH] [--label gpu]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from results import print_table, write_result
from serving import ServedBase, add_serving_arguments, result_name, start_openft, stop

PROMPT = [{"role": "user", "content": "Tell me about the lighthouse and its keeper."}]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vllm_url(workdir: Path, model: str) -> str:
    """The address of the vLLM that serves ``model``, from its pidfile and command line."""
    pid = (workdir / "data" / "run" / f"vllm-{model}.pid").read_text().strip()
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return f"http://127.0.0.1:{args[args.index('--port') + 1]}"


async def one(client: httpx.AsyncClient, url: str, tokens: int, model: str) -> tuple[float, float]:
    """(time to first token, total time) of one streamed request."""
    body = {
        "model": model, "messages": PROMPT, "max_tokens": tokens, "min_tokens": tokens,
        "ignore_eos": True, "temperature": 0, "stream": True,
    }  # fmt: skip
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not first and line.startswith("data: ") and '"content"' in line:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def round_of(
    url: str,
    headers: dict[str, str],
    requests: int,
    concurrency: int,
    tokens: int,
    models: tuple[str, ...],
) -> tuple[float, list[float], list[float]]:
    """Output tokens per second, and each request's TTFT and latency (``models`` in turn)."""
    queue = [models[i % len(models)] for i in range(requests)]
    firsts: list[float] = []
    totals: list[float] = []
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:

        async def worker() -> None:
            while queue:
                model = queue.pop()
                first, total = await one(client, url, tokens, model)
                firsts.append(first)
                totals.append(total)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests * tokens / elapsed, firsts, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    models = (served.name,)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-gateway-"))
    server, base, key = start_openft(workdir, "--workers", "0", env=served.env)
    try:
        paths = {"vLLM direct (baseline)": (vllm_url(workdir, served.name), {}),
                 "through the gateway": (base, {"authorization": f"Bearer {key}"})}  # fmt: skip
        for url, headers in paths.values():  # warm up both
            asyncio.run(round_of(url, headers, 8, args.concurrency, args.tokens, models))
        seen: dict[str, dict[str, list[float]]] = {
            label: {"rate": [], "first": [], "total": []} for label in paths
        }
        api_cpu = 0.0
        for _ in range(args.rounds):
            for label, (url, headers) in paths.items():
                before = cpu_seconds(server.pid)
                rate, firsts, totals = asyncio.run(
                    round_of(url, headers, args.requests, args.concurrency, args.tokens, models)
                )
                if label == "through the gateway":
                    api_cpu += cpu_seconds(server.pid) - before
                seen[label]["rate"].append(rate)
                seen[label]["first"] += firsts
                seen[label]["total"] += totals
    finally:
        stop(server)
    figures = {
        label: {
            "tokens_per_second": statistics.median(values["rate"]),
            "median_ttft_ms": statistics.median(values["first"]) * 1e3,
            "median_latency_ms": statistics.median(values["total"]) * 1e3,
        }
        for label, values in seen.items()
    }
    direct, gateway = figures["vLLM direct (baseline)"], figures["through the gateway"]
    print(f"base model {served.describe()}; "
          f"{args.requests} requests x {args.rounds} rounds, {args.concurrency} concurrent, "
          f"{args.tokens} output tokens each")  # fmt: skip
    print_table(
        ("path", "tokens/s", "median TTFT ms", "median latency ms"),
        [(label, f"{f['tokens_per_second']:.1f}", f"{f['median_ttft_ms']:.1f}",
          f"{f['median_latency_ms']:.1f}") for label, f in figures.items()],
    )  # fmt: skip
    ratio = gateway["tokens_per_second"] / direct["tokens_per_second"]
    added_ttft = gateway["median_ttft_ms"] - direct["median_ttft_ms"]
    added_latency = gateway["median_latency_ms"] - direct["median_latency_ms"]
    print(f"throughput {ratio:.3f}x (bar >= 0.95x); added TTFT {added_ttft:+.1f} ms, "
          f"latency {added_latency:+.1f} ms (bar < 5 ms)")  # fmt: skip
    per_request_ms = api_cpu / (args.rounds * args.requests) * 1e3
    print(f"the API process used {per_request_ms:.1f} ms of CPU per request, on the same "
          f"{os.cpu_count()} cores as vLLM")  # fmt: skip
    write_result(
        result_name("gateway_overhead", args.label),
        {
            "base_model": served.describe(),
            "requests": args.requests, "concurrency": args.concurrency, "tokens": args.tokens,
            "paths": {k: {n: round(v, 2) for n, v in f.items()} for k, f in figures.items()},
            "throughput_ratio": round(ratio, 3),
            "added_ttft_ms": round(added_ttft, 2), "added_latency_ms": round(added_latency, 2),
            "api_cpu_ms_per_request": round(per_request_ms, 2),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
