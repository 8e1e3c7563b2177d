"""Run ``openft serve`` as a real process on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.settings import Settings

KEY_LINE = re.compile(r"^(sk-openft-\S+)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def openft_command() -> list[str]:
    script = Path(sys.executable).with_name("openft")
    return [str(script)] if script.exists() else [shutil.which("openft") or "openft"]


@dataclass
class ServerProcess:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    command: list[str]
    workdir: Path

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def settings(self) -> Settings:
        """The server's own settings (from the ``OPENFT_*`` variables it was started with)."""
        fields = {
            name.removeprefix("OPENFT_").lower(): json.loads(value) if value[:1] in "{[" else value
            for name, value in self.env.items()
            if name.startswith("OPENFT_") and value
        }
        return Settings(**fields)

    def bootstrap_key(self) -> str | None:
        found = KEY_LINE.search(self.stdout_path.read_text())
        return found.group(1) if found else None

    def cli(self, *args: str) -> str:
        """Run ``openft ARGS`` against this server's settings; its stdout (it must succeed)."""
        done = subprocess.run(
            [*openft_command(), *args], cwd=self.workdir, env=self.env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def logs(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-8000:]

    def restart(self, timeout_s: float = 120) -> None:
        """Stop the server and start the same command (same port, same data) again."""
        self.stop()
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=self.env, stdout=out, stderr=err
            )
        _wait_ready(self, timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    workdir: Path,
    extra_env: dict[str, str],
    *args: str,
    timeout_s: float = 120,
    entry_point: str = "serve",
) -> ServerProcess:
    """``openft serve`` (or ``openft api``) on a free port, ready when ``/readyz`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "OPENFT_DATA_DIR": str(workdir / "data"), **extra_env}
    stdout_path, stderr_path = workdir / "serve.out", workdir / "serve.err"
    command = [*openft_command(), entry_point, "--host", "127.0.0.1", "--port", str(port), *args]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=err)
    server = ServerProcess(
        f"http://127.0.0.1:{port}", env, process, stdout_path, stderr_path, command, workdir
    )
    _wait_ready(server, timeout_s)
    return server


def _wait_ready(server: ServerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"openft serve exited with {server.process.returncode}:\n{server.logs()}"
            )
        try:
            if httpx.get(server.base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"openft serve did not become ready in {timeout_s}s:\n{server.logs()}")


def wait_until_models_ready(server: ServerProcess, timeout_s: float = 300) -> None:
    """Wait for every vLLM server behind ``server`` (``/readyz`` lists them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(server.base_url + "/readyz", timeout=5).json().get("models", {})
        if models and all(state == "ready" for state in models.values()):
            return
        if server.process.poll() is not None:
            break
        time.sleep(1)
    raise RuntimeError(f"vLLM did not become ready in {timeout_s}s:\n{server.logs()}")
