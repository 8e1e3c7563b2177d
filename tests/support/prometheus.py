"""A real Prometheus (Debian's package) scraping a test server, queried over its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


def binary() -> str | None:
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def values_over(
        self, promql: str, start: float, end: float, step_s: float
    ) -> dict[float, float]:
        """``promql`` evaluated every ``step_s`` from ``start`` to ``end`` (one series)."""
        response = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": promql, "start": start, "end": end, "step": step_s},
            timeout=60,
        )
        response.raise_for_status()
        result = response.json()["data"]["result"]
        assert len(result) <= 1, result
        return {float(t): float(v) for t, v in result[0]["values"]} if result else {}


@contextmanager
def running_prometheus(workdir: Path, target: str, token: str) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (host:port) every second with the operators' token."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(token)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "openft",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(workdir / "token")},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    with started_prometheus(workdir, config) as server:
        yield server


@contextmanager
def started_prometheus(workdir: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    """Prometheus with ``config``, keeping its data in ``workdir/data`` (which may hold blocks)."""
    assert binary() is not None, "prometheus is not installed"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(binary()),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def wait_for_value(
    prometheus: Prometheus, promql: str, expected: float, timeout_s: float = 60
) -> float | None:
    """Poll until ``promql`` gives ``expected`` (scrapes are every second); the last value seen."""
    deadline = time.monotonic() + timeout_s
    seen = prometheus.value(promql)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = prometheus.value(promql)
    return seen
