"""Starting `openft serve` for a benchmark: a scratch data folder, a free port, the first key."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
    ``env`` adds settings; ``pin_to`` keeps the server (and its children) on one CPU.
    """
    port = free_port()
    environment = {**os.environ, "OPENFT_DATA_DIR": str(workdir / "data"), **(env or {})}
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
