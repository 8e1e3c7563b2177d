"""A server killed in the middle of an upload: no file appears, and the next start sweeps up.

Runs on the local blob folder and on S3 (SeaweedFS). The upload is 40 MiB so that on S3 a
multipart upload is under way (parts are 16 MiB) when the SIGKILL comes.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.blobstore import BlobStore, LocalBlobStore, open_blob_store
from service.blobstore.s3 import STAGING, S3BlobStore
from tests.support.server import ServerProcess, start_server

MIB = 1024 * 1024
TOTAL = 40 * MIB
SENT_BEFORE_KILL = 24 * MIB


@pytest.fixture(params=["local", "s3"])
def crash_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServerProcess, BlobStore]]:
    env = {"OPENFT_ORPHAN_GRACE_SECONDS": "0"}  # the next start sweeps everything left over
    if request.param == "s3":
        env.update(
            request.getfixturevalue("s3_server").settings_env(f"crash-{secrets.token_hex(3)}")
        )
    server = start_server(tmp_path / "serve", env, "--workers", "0", "--no-vllm")
    try:
        yield server, open_blob_store(server.settings())
    finally:
        server.stop()


def staged(store: BlobStore) -> int:
    """Staged writes in flight or abandoned, counted without touching them."""
    if isinstance(store, LocalBlobStore):
        return len(list((store.root / ".staging").iterdir()))
    assert isinstance(store, S3BlobStore)
    prefix = store.location.prefix + STAGING + "/"
    uploads = store.client.list_multipart_uploads(Bucket=store.location.bucket, Prefix=prefix)
    objects = store.client.list_objects_v2(Bucket=store.location.bucket, Prefix=prefix)
    return len(uploads.get("Uploads", [])) + len(objects.get("Contents", []))


def begin_upload(server: ServerProcess, key: str) -> socket.socket:
    """Send the headers and the first 24 MiB of a 40 MiB fine-tune upload, then stop."""
    boundary = "openft-crash-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    line = (
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    )
    body_length = len(head) + TOTAL + len(tail)
    port = int(server.base_url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(
        (
            "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {body_length}\r\n\r\n"
        ).encode()
        + head
    )
    chunk = line * (MIB // len(line))
    sent = 0
    while sent < SENT_BEFORE_KILL:
        conn.sendall(chunk)
        sent += len(chunk)
    return conn


def test_a_server_killed_mid_upload_leaves_no_file_and_the_next_start_sweeps(
    crash_server: tuple[ServerProcess, BlobStore],
) -> None:
    server, store = crash_server
    key = server.bootstrap_key()
    assert key is not None
    conn = begin_upload(server, key)
    deadline = time.monotonic() + 60
    while staged(store) == 0:  # the server is writing the upload's bytes
        assert time.monotonic() < deadline, "the upload never reached the blob store"
        time.sleep(0.1)

    server.process.kill()
    server.process.wait()
    conn.close()
    assert staged(store) > 0  # the dead server left its half-written upload behind
    server.restart()

    files = httpx.get(
        server.base_url + "/v1/files", headers={"authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert files["data"] == []
    assert list(store.keys("files")) == []
    assert staged(store) == 0  # swept at start-up
