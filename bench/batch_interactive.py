"""Batch lines beside interactive traffic: interactive chat latency (p50, p99) alone and while a
1,000-line batch runs, and a batch's lines per second against the same requests sent straight
to vLLM.

`openft serve` with its vLLM child and the demo model, no workers. Interactive traffic is one
client sending `--interactive` chat requests one after another; every request (interactive,
batch line, direct) asks for exactly `--tokens` tokens (`ignore_eos`). Phases, in one run:
interactive alone (the baseline); interactive while a `--lines` batch is in progress; then the
batch's throughput on its own, measured on a `--throughput-lines` batch from `create` to
`completed`, against the same requests sent straight to the vLLM server with as many in flight
as the batch runner keeps (`OPENFT_BATCH_CONCURRENCY_PER_MODEL`). Bar: interactive p50 with the
batch at most 2x the baseline. `--fcfs` runs vLLM first-come-first-served instead of with
priority scheduling, to see what the priority is worth.
Run: `.venv/bin/python bench/batch_interactive.py [--lines 1000] [--interactive 60]
[--tokens 16] [--batch-concurrency 1] [--fcfs] [--base-model PATH] [--label gpu]`.
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
from gateway_overhead import vllm_url
from results import percentile, print_table, write_result
from serving import ServedBase, add_serving_arguments, result_name, start_openft, stop

PROMPT = [{"role": "user", "content": "Tell me about the lighthouse and its keeper."}]


def chat_body(model: str, tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "max_tokens": tokens, "min_tokens": tokens,
            "ignore_eos": True, "temperature": 0}  # fmt: skip


def interactive(base: str, key: str, model: str, count: int, tokens: int) -> list[float]:
    """Latency of ``count`` chat requests, one after another."""
    latencies = []
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=300) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(base + "/v1/chat/completions", json=chat_body(model, tokens))
            assert response.status_code == 200, response.text
            latencies.append(time.perf_counter() - started)
    return latencies


def create_batch(base: str, key: str, model: str, lines: int, tokens: int) -> str:
    rows = [
        {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": chat_body(model, tokens)}
        for i in range(lines)
    ]  # fmt: skip
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120) as client:
        file = client.post(
            base + "/v1/files", files={"file": ("batch.jsonl", data)}, data={"purpose": "batch"}
        ).json()
        batch = client.post(
            base + "/v1/batches",
            json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"},
        ).json()  # fmt: skip
    return str(batch["id"])


def batch_state(base: str, key: str, batch_id: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{base}/v1/batches/{batch_id}", headers={"authorization": f"Bearer {key}"}, timeout=60
    )
    state: dict[str, Any] = answer.json()
    return state


def wait_batch(base: str, key: str, batch_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    while True:
        state = batch_state(base, key, batch_id)
        if state["status"] in statuses:
            return state
        time.sleep(0.1)


async def direct(url: str, model: str, count: int, tokens: int, concurrency: int) -> float:
    """Seconds to send ``count`` requests straight to vLLM, ``concurrency`` at a time."""
    remaining = count
    async with httpx.AsyncClient(timeout=300) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                answer = await client.post(
                    url + "/v1/chat/completions", json=chat_body(model, tokens)
                )
                assert answer.status_code == 200, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--interactive", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--throughput-lines", type=int, default=200)
    parser.add_argument("--fcfs", action="store_true", help="vLLM without priority scheduling")
    parser.add_argument(
        "--batch-concurrency", type=int, default=1, help="OPENFT_BATCH_CONCURRENCY_PER_MODEL"
    )
    add_serving_arguments(parser)
    args = parser.parse_args()
    served = ServedBase.of(args.base_model)
    env = {
        **served.env,
        "OPENFT_VLLM_PRIORITY_SCHEDULING": "false" if args.fcfs else "true",
        "OPENFT_BATCH_CONCURRENCY_PER_MODEL": str(args.batch_concurrency),
    }
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-batch-"))
    server, base, key = start_openft(workdir, "--workers", "0", env=env)
    model, tokens = served.name, args.tokens
    try:
        interactive(base, key, model, 8, tokens)  # warm up
        alone = interactive(base, key, model, args.interactive, tokens)
        batch_id = create_batch(base, key, model, args.lines, tokens)
        wait_batch(base, key, batch_id, ("in_progress",))
        beside = interactive(base, key, model, args.interactive, tokens)
        still = batch_state(base, key, batch_id)
        assert still["status"] == "in_progress", f"the batch ended first: {still['status']}"
        done = wait_batch(base, key, batch_id, ("completed", "failed", "cancelled"))
        assert done["request_counts"]["completed"] == args.lines, done
        started = time.perf_counter()
        timed = create_batch(base, key, model, args.throughput_lines, tokens)
        finished = wait_batch(base, key, timed, ("completed", "failed", "cancelled"))
        batch_s = time.perf_counter() - started
        assert finished["request_counts"]["completed"] == args.throughput_lines, finished
        direct_s = asyncio.run(direct(vllm_url(workdir, model), model, args.throughput_lines,
                                      tokens, args.batch_concurrency))  # fmt: skip
    finally:
        stop(server)
    without, within = summary(alone), summary(beside)
    ratio = within["p50_ms"] / without["p50_ms"]
    batch_rate, direct_rate = args.throughput_lines / batch_s, args.throughput_lines / direct_s
    scheduling = "first come, first served" if args.fcfs else "priority"
    print(f"base model {served.describe()}; vLLM scheduling: {scheduling}; {args.interactive} "
          f"interactive requests, {tokens} tokens each; a {args.lines}-line batch, "
          f"{args.batch_concurrency} lines in flight")  # fmt: skip
    print_table(
        ("interactive chat", "p50 ms", "p99 ms"),
        [("alone (baseline)", f"{without['p50_ms']:.1f}", f"{without['p99_ms']:.1f}"),
         ("beside the batch", f"{within['p50_ms']:.1f}", f"{within['p99_ms']:.1f}")],
    )  # fmt: skip
    print(f"interactive p50 beside the batch / alone: {ratio:.2f}x (bar: <= 2x)")
    print_table(
        ("requests", "lines/s"),
        [(f"straight to vLLM, {args.batch_concurrency} in flight (baseline)", f"{direct_rate:.2f}"),
         (f"a {args.throughput_lines}-line batch, create to completed", f"{batch_rate:.2f}")],
    )  # fmt: skip
    print(f"batch vs direct: {batch_rate / direct_rate:.2f}x")
    write_result(
        result_name(
            f"batch_interactive_c{args.batch_concurrency}" + ("_fcfs" if args.fcfs else ""),
            args.label,
        ),
        {
            "base_model": served.describe(), "scheduling": scheduling, "tokens": tokens,
            "interactive_requests": args.interactive, "batch_lines": args.lines,
            "batch_concurrency": args.batch_concurrency,
            "alone": {k: round(v, 1) for k, v in without.items()},
            "beside_batch": {k: round(v, 1) for k, v in within.items()},
            "p50_ratio": round(ratio, 3),
            "batch_lines_per_second": round(batch_rate, 2),
            "direct_lines_per_second": round(direct_rate, 2),
            "batch_vs_direct": round(batch_rate / direct_rate, 3),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
