"""What the Responses API costs on top of chat completions: the same streamed requests, as
`POST /v1/chat/completions` (the baseline) and as `POST /v1/responses`, through the gateway.

`openft serve` with its vLLM child and the demo model, no workers. One fixed prompt, greedy,
`--tokens` output tokens at most (the Responses API has no `ignore_eos`; the usage each answer
reports is what is counted), `--concurrency` clients, alternating rounds, `store` on for
responses (OpenAI's default: a row written per response). Prints tokens/s, median time to the
first text and median latency per path, the ratio and the difference, and the API process's
CPU per request on each path.
Run: `.venv/bin/python bench/responses_overhead.py [--requests 64] [--concurrency 4]
[--base-model PATH] [--label gpu]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from gateway_overhead import add_load_arguments, cpu_seconds
from results import print_table, write_result
from serving import ServedBase, add_serving_arguments, result_name, start_openft, stop

QUESTION = "Tell me about the lighthouse and its keeper."
CHAT = "chat completions (baseline)"
RESPONSES = "responses"


def request(path: str, model: str, tokens: int) -> tuple[str, dict[str, Any], str]:
    """(URL path, body, the stream line that carries the first text) of one streamed request."""
    if path == CHAT:
        body = {
            "model": model, "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
        }  # fmt: skip
        return "/v1/chat/completions", body, '"content"'
    body = {"model": model, "input": QUESTION, "max_output_tokens": tokens, "temperature": 0,
            "stream": True}  # fmt: skip
    return "/v1/responses", body, "response.output_text.delta"


def output_tokens(line: str) -> int:
    """The output tokens a stream line's usage reports (0 if it has none)."""
    if not line.startswith("data: {"):
        return 0
    data = json.loads(line[6:])
    usage = data.get("usage") or (data.get("response") or {}).get("usage") or {}
    return int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)


async def one(
    client: httpx.AsyncClient, base: str, path: str, model: str, tokens: int
) -> tuple[float, float, int]:
    """(time to first text, total time, output tokens) of one streamed request."""
    url_path, body, first_marker = request(path, model, tokens)
    started = time.perf_counter()
    first, produced = 0.0, 0
    async with client.stream("POST", base + url_path, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not first and first_marker in line:
                first = time.perf_counter() - started
            produced = max(produced, output_tokens(line))
    return first, time.perf_counter() - started, produced


async def round_of(
    base: str, key: str, path: str, requests: int, concurrency: int, tokens: int, model: str
) -> tuple[float, list[float], list[float]]:
    """Output tokens per second, and each request's time to first text and latency."""
    firsts: list[float] = []
    totals: list[float] = []
    produced = 0
    remaining = requests
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:

        async def worker() -> None:
            nonlocal remaining, produced
            while remaining > 0:
                remaining -= 1
                first, total, count = await one(client, base, path, model, tokens)
                firsts.append(first)
                totals.append(total)
                produced += count

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return produced / elapsed, firsts, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_arguments(parser)
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-responses-"))
    server, base, key = start_openft(workdir, "--workers", "0", env=served.env)
    seen: dict[str, dict[str, list[float]]] = {
        path: {"rate": [], "first": [], "total": [], "cpu": []} for path in (CHAT, RESPONSES)
    }
    try:
        for path in seen:  # warm up both
            asyncio.run(round_of(base, key, path, 8, args.concurrency, args.tokens, served.name))
        for _ in range(args.rounds):
            for path, values in seen.items():
                before = cpu_seconds(server.pid)
                rate, firsts, totals = asyncio.run(
                    round_of(
                        base, key, path, args.requests, args.concurrency, args.tokens, served.name
                    )
                )
                values["cpu"].append((cpu_seconds(server.pid) - before) / args.requests)
                values["rate"].append(rate)
                values["first"] += firsts
                values["total"] += totals
    finally:
        stop(server)
    figures = {
        path: {
            "tokens_per_second": statistics.median(values["rate"]),
            "median_first_text_ms": statistics.median(values["first"]) * 1e3,
            "median_latency_ms": statistics.median(values["total"]) * 1e3,
            "api_cpu_ms_per_request": statistics.median(values["cpu"]) * 1e3,
        }
        for path, values in seen.items()
    }
    print(f"base model {served.describe()}; {args.requests} requests x {args.rounds} rounds, "
          f"{args.concurrency} concurrent, at most {args.tokens} output tokens each")  # fmt: skip
    print_table(
        ("path", "tokens/s", "median first text ms", "median latency ms", "API CPU ms/request"),
        [(path, f"{f['tokens_per_second']:.1f}", f"{f['median_first_text_ms']:.1f}",
          f"{f['median_latency_ms']:.1f}", f"{f['api_cpu_ms_per_request']:.2f}")
         for path, f in figures.items()],
    )  # fmt: skip
    chat, responses = figures[CHAT], figures[RESPONSES]
    ratio = responses["tokens_per_second"] / chat["tokens_per_second"]
    added_first = responses["median_first_text_ms"] - chat["median_first_text_ms"]
    added_latency = responses["median_latency_ms"] - chat["median_latency_ms"]
    added_cpu = responses["api_cpu_ms_per_request"] - chat["api_cpu_ms_per_request"]
    print(f"responses vs chat: throughput {ratio:.3f}x; added first text {added_first:+.1f} ms, "
          f"latency {added_latency:+.1f} ms, API CPU {added_cpu:+.2f} ms per request")  # fmt: skip
    write_result(
        result_name("responses_overhead", args.label),
        {
            "base_model": served.describe(),
            "requests": args.requests, "concurrency": args.concurrency, "tokens": args.tokens,
            "paths": {k: {n: round(v, 2) for n, v in f.items()} for k, f in figures.items()},
            "throughput_ratio": round(ratio, 3), "added_first_text_ms": round(added_first, 2),
            "added_latency_ms": round(added_latency, 2),
            "added_api_cpu_ms_per_request": round(added_cpu, 2),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
