"""Soak: `openft serve` on PostgreSQL under a mixed load for minutes; errors and memory growth.

Starts a real `openft serve` (API, one training worker, vLLM on CPU with the demo model) on a
scratch PostgreSQL database and drives it with the official `openai` SDK from a few threads:
uploads (`files.create` and multipart `uploads`), small fine-tuning jobs (at most two outstanding),
polling (jobs, events, checkpoints, files, models), chat completions on the base model and on the
fine-tuned models as they appear, and deletions (files after their job, the oldest models) so
storage stays bounded. Deliberate errors (a deleted file or model asked for again must be a 404)
are counted apart. Every 10 s it samples the resident memory (VmRSS) of the API process, the
worker and vLLM. Bars: 0 errors (any other non-2xx, failed job or transport error); the API's RSS
grows < 1 MB/min after the warm-up (least-squares slope). There is no baseline to divide by: the
figures are an error fraction and a slope. Run: `.venv/bin/python bench/soak.py [--minutes 10]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
from openai import OpenAI
from openai.types import FileObject
from postgres import scratch_database
from results import print_table, write_result
from serving import start_openft, stop

T = TypeVar("T")
BASE_MODEL = "tiny-chat"
SAMPLE_EVERY_S = 10.0
MAX_OUTSTANDING_JOBS = 2
MAX_SPARE_FILES = 3
MAX_LIVE_MODELS = 2
SHOWN_ERRORS = 5
METRICS_TOKEN = "soak-metrics-token"
MB = 1e6
PROCESSES = ("api", "worker", "vllm")
STORAGE = ("blobs", "adapters")  # under the data folder


class Expected(Exception):
    """A call meant to fail with ``status`` succeeded."""


@dataclass
class Tally:
    """Requests served per kind, deliberate failures, and the errors (the first few kept)."""

    served: collections.Counter[str] = field(default_factory=collections.Counter)
    deliberate: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    first_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def call(self, kind: str, request: Callable[[], T], expect: int | None = None) -> T | None:
        """``request()``, counted under ``kind``; with ``expect``, that status is the success."""
        try:
            result = request()
        except openai.APIStatusError as exc:
            if exc.status_code == expect:
                with self.lock:
                    self.deliberate[kind] += 1
                return None
            self.error(kind, f"{exc.status_code} {exc.message}")
            return None
        except (openai.APIError, Expected) as exc:
            cause = f" ({exc.__cause__!r})" if exc.__cause__ is not None else ""
            self.error(kind, f"{type(exc).__name__}: {exc}{cause}")
            return None
        if expect is not None:
            self.error(kind, f"expected {expect}, got a success")
            return None
        self.count(kind)
        return result

    def count(self, kind: str) -> None:
        with self.lock:
            self.served[kind] += 1

    def error(self, kind: str, text: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.first_errors) < SHOWN_ERRORS:
                minute = (time.monotonic() - self.started) / 60
                self.first_errors.append(f"minute {minute:.2f}, {kind}: {text}"[:300])


@dataclass
class Pool:
    """What the threads share: unused files, outstanding jobs, and fine-tuned models in use."""

    spare_files: collections.deque[str] = field(default_factory=collections.deque)
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> its training file
    known_jobs: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    models: dict[str, int] = field(default_factory=dict)  # model -> chats in flight
    deleted_models: set[str] = field(default_factory=set)
    series: int = 0  # in the last /metrics scrape
    series_models: set[str] = field(default_factory=set)  # fine-tuned models named there
    succeeded: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def borrow_model(self) -> str | None:
        with self.lock:
            if not self.models:
                return None
            model = random.choice(list(self.models))
            self.models[model] += 1
            return model

    def give_back(self, model: str) -> None:
        with self.lock:
            self.models[model] -= 1

    def retire_model(self) -> str | None:
        """The oldest fine-tuned model beyond the cap that no chat is using, now unlisted."""
        with self.lock:
            idle = [m for m, users in self.models.items() if users == 0]
            if len(self.models) <= MAX_LIVE_MODELS or not idle:
                return None
            del self.models[idle[0]]
            return idle[0]


def training_file(serial: int, examples: int = 10) -> bytes:
    lines = [
        {"messages": [
            {"role": "user", "content": f"What is code word {serial}-{i}?"},
            {"role": "assistant", "content": f"The code word is lantern-{serial}-{i}."},
        ]}
        for i in range(examples)
    ]  # fmt: skip
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


class Soak:
    """The load: one method per client thread, each looping until ``stop`` is set."""

    def __init__(self, client: OpenAI, tally: Tally, pool: Pool, stop: threading.Event) -> None:
        self.client, self.tally, self.pool, self.stop = client, tally, pool, stop
        self.metrics_url = str(client.base_url).removesuffix("/v1/") + "/metrics"

    def uploader(self) -> None:
        serial = 0
        while not self.stop.wait(2.0):
            serial += 1
            made = self.upload(serial)
            if made is None:
                continue
            self.read_back(made.id)
            with self.pool.lock:
                self.pool.spare_files.append(made.id)
                extra = len(self.pool.spare_files) > MAX_SPARE_FILES
                oldest = self.pool.spare_files.popleft() if extra else None
            if oldest is not None:
                self.delete_file(oldest)

    def upload(self, serial: int) -> FileObject | None:
        """A 10-example training file; every fourth through a three-part Upload."""
        data, name = training_file(serial), f"soak-{serial}.jsonl"
        if serial % 4:
            return self.tally.call("files.create", lambda: self.client.files.create(
                file=(name, data), purpose="fine-tune"))  # fmt: skip
        upload = self.tally.call("uploads (multipart)", lambda: self.client.uploads.
            upload_file_chunked(file=data, filename=name, bytes=len(data), mime_type="text/jsonl",
                                purpose="fine-tune", part_size=len(data) // 3 + 1))  # fmt: skip
        return upload.file if upload is not None else None

    def read_back(self, file_id: str) -> None:
        self.tally.call("files.content", lambda: self.client.files.content(file_id).read())

    def delete_file(self, file_id: str) -> None:
        self.tally.call("files.delete", lambda: self.client.files.delete(file_id))
        self.tally.call("files.retrieve (deleted)", lambda: self.client.files.retrieve(file_id),
                        expect=404)  # fmt: skip

    def trainer(self) -> None:
        while not self.stop.wait(1.0):
            with self.pool.lock:
                room = len(self.pool.jobs) < MAX_OUTSTANDING_JOBS and bool(self.pool.spare_files)
                file_id = self.pool.spare_files.popleft() if room else None
            if file_id is not None:
                self.start_job(file_id)
            for job_id, file_id in list(self.pool.jobs.items()):
                self.follow_job(job_id, file_id)
            while (model := self.pool.retire_model()) is not None:
                self.delete_model(model)

    def start_job(self, file_id: str) -> None:
        job = self.tally.call("jobs.create", lambda: self.client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=file_id, hyperparameters={"n_epochs": 1}))  # fmt: skip
        with self.pool.lock:
            if job is None:
                self.pool.spare_files.append(file_id)
            else:
                self.pool.jobs[job.id] = file_id
                self.pool.known_jobs.append(job.id)

    def follow_job(self, job_id: str, file_id: str) -> None:
        jobs = self.client.fine_tuning.jobs
        job = self.tally.call("jobs.retrieve", lambda: jobs.retrieve(job_id))
        if job is None or job.status not in ("succeeded", "failed", "cancelled"):
            return
        with self.pool.lock:
            del self.pool.jobs[job_id]
            if job.status == "succeeded" and job.fine_tuned_model:
                self.pool.succeeded += 1
                self.pool.models[job.fine_tuned_model] = 0
            else:
                self.pool.failed += 1
        if job.status != "succeeded":
            self.tally.error("job", f"{job_id} {job.status}: {job.error}")
        self.delete_file(file_id)

    def delete_model(self, model: str) -> None:
        if self.tally.call("models.delete", lambda: self.client.models.delete(model)) is not None:
            with self.pool.lock:
                self.pool.deleted_models.add(model)
        self.tally.call("chat (deleted model)", lambda: self.chat(model), expect=404)

    def poller(self) -> None:
        while not self.stop.wait(0.1):
            with self.pool.lock:
                job_id = random.choice(self.pool.known_jobs) if self.pool.known_jobs else None
            kind, request = random.choice(list(self.polls(job_id).items()))
            self.tally.call(kind, request)

    def polls(self, job_id: str | None) -> dict[str, Callable[[], object]]:
        """The read requests a dashboard would send, by kind."""
        jobs = self.client.fine_tuning.jobs
        calls: dict[str, Callable[[], object]] = {
            "files.list": lambda: self.client.files.list(limit=20),
            "models.list": self.client.models.list,
            "jobs.list": lambda: jobs.list(limit=20),
        }
        if job_id is not None:
            calls |= {
                "jobs.retrieve": lambda: jobs.retrieve(job_id),
                "jobs.list_events": lambda: jobs.list_events(job_id, limit=20),
                "jobs.checkpoints.list": lambda: jobs.checkpoints.list(job_id),
            }
        return calls

    def scraper(self) -> None:
        """Prometheus's part: GET /metrics every 15 s; how many series, naming which models."""
        headers = {"authorization": f"Bearer {METRICS_TOKEN}"}
        while not self.stop.wait(15.0):
            try:
                response = httpx.get(self.metrics_url, headers=headers, timeout=60)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.tally.error("GET /metrics", repr(exc))
                continue
            self.tally.count("GET /metrics")
            lines = [line for line in response.text.splitlines() if not line.startswith("#")]
            with self.pool.lock:
                self.pool.series = len(lines)
                self.pool.series_models = set(re.findall(r'model="(ft:[^"]+)"', response.text))

    def chatter(self) -> None:
        while not self.stop.wait(0.2):
            model = self.pool.borrow_model() if random.random() < 2 / 3 else None
            if model is None:
                self.tally.call("chat (base model)", lambda: self.chat(BASE_MODEL))
                continue
            try:
                self.tally.call("chat (fine-tuned)", lambda: self.chat(model))  # noqa: B023
            finally:
                self.pool.give_back(model)

    def chat(self, model: str) -> str:
        """One short completion, streamed half the time; its text."""
        messages: Any = [{"role": "user", "content": "What is code word 1-1?"}]
        if random.random() < 0.5:
            answer = self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=16, temperature=0)  # fmt: skip
            return answer.choices[0].message.content or ""
        stream = self.client.chat.completions.create(
            model=model, messages=messages, max_tokens=16, temperature=0, stream=True)  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
    return int(kb) * 1024 / MB


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = next(line for line in (entry / "status").read_text().splitlines()
                            if line.startswith("PPid:"))  # fmt: skip
            except (OSError, StopIteration):
                continue
            if int(ppid.split()[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (vLLM's engine runs in a child)."""
    return rss_mb(pid) + sum(tree_rss_mb(child) for child in children(pid))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MB


def sample(api_pid: int, workdir: Path) -> dict[str, float]:
    """RSS of the API process (the parent: uvicorn runs in it), the worker and vLLM, and the
    size of the blob store and of vLLM's local adapter folder, in MB."""
    kids = children(api_pid)
    pidfile = workdir / "data" / "run" / f"vllm-{BASE_MODEL}.pid"
    vllm = int(pidfile.read_text().strip()) if pidfile.exists() else 0
    return {
        "api": rss_mb(api_pid),
        "worker": sum(tree_rss_mb(k) for k in kids if "trainer.worker" in cmdline(k)),
        "vllm": tree_rss_mb(vllm) if vllm else 0.0,
        **{folder: folder_mb(workdir / "data" / folder) for folder in STORAGE},
    }


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MB) points."""
    n = len(points)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def sampler(
    api_pid: int, workdir: Path, stop: threading.Event, into: list[dict[str, float]]
) -> None:
    started = time.monotonic()
    while True:
        into.append({"minute": (time.monotonic() - started) / 60, **sample(api_pid, workdir)})
        if stop.wait(SAMPLE_EVERY_S):
            return


def guarded(target: Callable[[], None], tally: Tally) -> Callable[[], None]:
    """``target``, with an unexpected exception counted as an error before the thread ends."""

    def run() -> None:
        try:
            target()
        except Exception as exc:
            tally.error("client thread", f"{getattr(target, '__name__', '?')} died: {exc!r}")
            raise

    return run


def run_load(client: OpenAI, api_pid: int, workdir: Path, minutes: float) -> tuple[
    Tally, Pool, list[dict[str, float]]
]:  # fmt: skip
    tally, pool, stop = Tally(), Pool(), threading.Event()
    soak = Soak(client, tally, pool, stop)
    samples: list[dict[str, float]] = []
    targets: list[Callable[[], None]] = [
        soak.uploader, soak.trainer, soak.poller, soak.chatter, soak.chatter, soak.scraper,
        lambda: sampler(api_pid, workdir, stop, samples),
    ]  # fmt: skip
    threads = [threading.Thread(target=guarded(target, tally), daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    stop.wait(minutes * 60)
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return tally, pool, samples


def report_requests(tally: Tally, pool: Pool, minutes: float) -> dict[str, Any]:
    """Print requests per kind, the errors and the jobs; their figures for the JSON."""
    kinds = sorted(set(tally.served) | set(tally.deliberate) | set(tally.errors))
    rows = [(k, tally.served[k], tally.deliberate[k], tally.errors[k]) for k in kinds]
    print_table(("request", "served", "deliberate 404", "errors"), rows)
    errors = sum(tally.errors.values())
    total = sum(tally.served.values()) + sum(tally.deliberate.values()) + errors
    print(f"\nrequests: {total} ({total / (minutes * 60):.1f}/s); errors: {errors} "
          f"({errors / max(total, 1):.2%}) (bar: 0)")  # fmt: skip
    for line in tally.first_errors:
        print(f"  {line}")
    print(f"jobs: {pool.succeeded} succeeded, {pool.failed} failed")
    stale = pool.series_models & pool.deleted_models
    print(
        f"last /metrics scrape: {pool.series} series, naming {len(pool.series_models)} "
        f"fine-tuned models, {len(stale)} of them deleted ({len(pool.deleted_models)} were)\n"
    )
    return {
        "requests": total, "served": dict(tally.served), "deliberate_404": dict(tally.deliberate),
        "errors": dict(tally.errors), "first_errors": tally.first_errors,
        "error_fraction": round(errors / max(total, 1), 6), "errors_bar_met": errors == 0,
        "jobs": {"succeeded": pool.succeeded, "failed": pool.failed},
        "metrics_series": pool.series, "models_deleted": len(pool.deleted_models),
        "deleted_models_in_metrics": len(stale),
    }  # fmt: skip


def report_memory(samples: list[dict[str, float]], warmup: float) -> dict[str, Any]:
    """Print RSS per process with its slope after ``warmup`` minutes, and the storage."""
    after = [s for s in samples if s["minute"] >= warmup]
    slopes = {p: slope_per_minute([(s["minute"], s[p]) for s in after]) for p in PROCESSES}
    print_table(("process", "RSS start MB", "after warm-up MB", "end MB", "slope MB/min"),
                [(p, f"{samples[0][p]:.1f}", f"{after[0][p]:.1f}", f"{samples[-1][p]:.1f}",
                  f"{slopes[p]:+.3f}") for p in PROCESSES])  # fmt: skip
    peak = {folder: max(s[folder] for s in samples) for folder in STORAGE}
    ends = [f"{f} {samples[-1][f]:.2f} (peak {peak[f]:.2f})" for f in STORAGE]
    print(f"storage at the end, MB: {', '.join(ends)}")
    met = slopes["api"] < 1.0
    print(f"API RSS slope after {warmup:.1f} min: {slopes['api']:+.3f} MB/min "
          f"(bar < 1 MB/min: {'met' if met else 'missed'})")  # fmt: skip
    return {
        "rss_slope_mb_per_min": {p: round(v, 4) for p, v in slopes.items()},
        "api_rss_bar_met": met,
        "storage_mb_end": {f: round(samples[-1][f], 3) for f in STORAGE},
        "storage_mb_peak": {f: round(v, 3) for f, v in peak.items()},
        "samples_mb": [{k: round(v, 2) for k, v in s.items()} for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument(
        "--warmup-minutes", type=float, help="default: 3, or a third of a short run"
    )
    args = parser.parse_args()
    if args.warmup_minutes is None:
        args.warmup_minutes = min(3.0, args.minutes / 3)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-soak-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # clean up the same
    with scratch_database("soak") as (database_url, _):
        env = {"OPENFT_DATABASE_URL": database_url, "OPENFT_METRICS_TOKEN": METRICS_TOKEN}
        server, base, key = start_openft(workdir, env=env)
        try:
            client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
            tally, pool, samples = run_load(client, server.pid, workdir, args.minutes)
        finally:
            stop(server)
    requests = report_requests(tally, pool, args.minutes)
    memory = report_memory(samples, args.warmup_minutes)
    write_result("soak", {"minutes": args.minutes, "warmup_minutes": args.warmup_minutes,
                          "database": "postgresql", **requests, **memory})  # fmt: skip
    if not requests["errors_bar_met"]:
        raise SystemExit(f"errors: the server's logs are in {workdir}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
