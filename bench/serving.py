"""Starting `openft serve` for a benchmark: a scratch data folder, a free port, the first key;
which base model it serves (the demo model, or `--base-model PATH` as `bench-base`); and asking a
served model questions."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import OpenAI

from service.settings import DEMO_MODEL_NAME

# The name `--base-model PATH` is served under.
BENCH_BASE_MODEL = "bench-base"


@dataclass(frozen=True)
class ServedBase:
    """The base model a serving benchmark fine-tunes and chats with: its name in the API, and the
    settings that make `openft serve` serve it (none for the demo model, its default)."""

    name: str = DEMO_MODEL_NAME
    env: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def of(cls, path: str | None) -> ServedBase:
        """The demo model for None; else the model at ``path`` (a folder, or a hub id) as
        `bench-base`, the only base model of the server (``OPENFT_BASE_MODELS``)."""
        if path is None:
            return cls()
        if Path(path).exists():  # the server runs in a scratch folder: no relative paths
            path = str(Path(path).resolve())
        models = [{"name": BENCH_BASE_MODEL, "path": path}]
        return cls(BENCH_BASE_MODEL, {"OPENFT_BASE_MODELS": json.dumps(models)}, path)

    def describe(self) -> str:
        return f"{self.name} ({self.path})" if self.path else f"{self.name} (the demo model)"


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """``--base-model`` and ``--label``, for the benchmarks that start `openft serve`."""
    parser.add_argument(
        "--base-model",
        metavar="PATH",
        help=f"serve this model (folder or hub id) as {BENCH_BASE_MODEL!r} instead of the demo "
        "model, e.g. one built by `python -m trainer.demo_model --size small`",
    )
    parser.add_argument(
        "--label", help="suffix of the results file: results/<benchmark>_<label>.json"
    )


def result_name(benchmark: str, label: str | None) -> str:
    """The results file name: ``benchmark``, with ``_label`` when a label is given."""
    return f"{benchmark}_{label}" if label else benchmark


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_openft(
    workdir: Path,
    *args: str,
    wait_for_models: bool = True,
    timeout_s: float = 600,
    env: dict[str, str] | None = None,
    pin_to: int | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start `openft serve` in ``workdir``; returns the process, its base URL and API key.

    Ready means `/readyz` answers, and with ``wait_for_models`` every vLLM behind it is up.
    ``env`` adds settings; ``pin_to`` keeps the server (and its children) on one CPU. The demo
    model is `tiny-chat` (the figures in README were measured on it) unless ``env`` says otherwise.
    """
    port = free_port()
    environment = {
        **os.environ,
        "OPENFT_DATA_DIR": str(workdir / "data"),
        "OPENFT_DEMO_MODEL_NAME": DEMO_MODEL_NAME,
        **(env or {}),
    }
    out = (workdir / "serve.out").open("wb")
    command = [str(Path(sys.executable).with_name("openft")), "serve", "--port", str(port)]
    if pin_to is not None:
        command = ["taskset", "--cpu-list", str(pin_to), *command]
    errors = (workdir / "serve.err").open("wb")
    server = subprocess.Popen(
        [*command, *args], cwd=workdir, env=environment, stdout=out, stderr=errors
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"openft serve exited with {server.returncode}; see {workdir}")
        try:
            ready = httpx.get(base + "/readyz", timeout=2)
            models = ready.json().get("models", {}) if ready.status_code == 200 else {}
            models_up = bool(models) and all(v == "ready" for v in models.values())
            if ready.status_code == 200 and (models_up or not wait_for_models):
                # The key is printed at the first start only: a restart finds it in serve.key.
                saved = workdir / "serve.key"
                key = re.search(r"sk-openft-\S+", (workdir / "serve.out").read_text())
                if key is not None:
                    saved.write_text(key.group(0))
                return server, base, saved.read_text()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("openft serve did not become ready")


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM `openft serve` (it stops its workers and vLLM), then SIGKILL if it lingers."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def greedy_answers(client: OpenAI, model: str, questions: list[str]) -> list[str]:
    """``model``'s greedy answers (48 tokens at most), asked 8 at a time (vLLM batches them)."""

    def ask(question: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            temperature=0, max_tokens=48,
        )  # fmt: skip
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, questions))
