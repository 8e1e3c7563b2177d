"""The blob-store contract, on the local folder and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.blobstore import BlobStore, LocalBlobStore
from service.blobstore.s3 import PART_BYTES, S3BlobStore
from tests.support.seaweedfs import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    env = server.settings_env(f"t-{secrets.token_hex(4)}")
    yield S3BlobStore(
        env["OPENFT_BLOB_URL"],
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        access_key_id=env["OPENFT_S3_ACCESS_KEY_ID"],
        secret_access_key=env["OPENFT_S3_SECRET_ACCESS_KEY"],
    )


@pytest.mark.parametrize("size", [0, 11, PART_BYTES * 2 + 12345])
def test_a_staged_blob_is_invisible_until_committed(store: BlobStore, size: int) -> None:
    data = secrets.token_bytes(size)
    writer = store.stage()
    for start in range(0, size, 1 << 20):
        writer.write(data[start : start + (1 << 20)])

    assert writer.size == size
    assert not store.exists("files/file-a")
    assert list(store.keys("files")) == []

    writer.commit("files/file-a")

    assert store.size("files/file-a") == size
    read = b"".join(store.read("files/file-a", chunk_size=1 << 18))
    assert hashlib.sha256(read).digest() == hashlib.sha256(data).digest()
    assert list(store.keys("files")) == ["files/file-a"]
    assert store.sweep_staging(older_than_s=0) == 0  # nothing staged is left behind


def test_commit_replaces_an_existing_blob(store: BlobStore) -> None:
    for content in (b"first", b"second"):
        writer = store.stage()
        writer.write(content)
        writer.commit("adapters/ftjob-x/final/a.json")

    assert b"".join(store.read("adapters/ftjob-x/final/a.json")) == b"second"


def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.stage()
    writer.write(b"x" * (PART_BYTES + 1))  # on S3, a multipart upload has begun
    writer.abort()
    writer.abort()

    assert store.sweep_staging(older_than_s=0) == 0
    assert list(store.keys("files")) == []


def test_abandoned_staged_writes_are_swept(store: BlobStore) -> None:
    abandoned = store.stage()
    abandoned.write(b"y" * (PART_BYTES + 1))  # a process died here, mid-upload

    assert store.sweep_staging(older_than_s=3600) == 0  # young: maybe still being written
    assert store.sweep_staging(older_than_s=0) >= 1
    assert store.sweep_staging(older_than_s=0) == 0


def test_delete_is_idempotent_and_reading_a_missing_blob_fails(store: BlobStore) -> None:
    store.delete("files/file-none")

    with pytest.raises(FileNotFoundError):
        store.read("files/file-none")
    with pytest.raises(FileNotFoundError):
        store.size("files/file-none")
    assert not store.exists("files/file-none")


def test_keys_lists_a_folder_recursively_and_in_order(store: BlobStore) -> None:
    for key in ("adapters/j/final/b", "adapters/j/final/a", "adapters/j/step-3/a", "files/f"):
        writer = store.stage()
        writer.write(b"1")
        writer.commit(key)

    assert list(store.keys("adapters/j")) == [
        "adapters/j/final/a",
        "adapters/j/final/b",
        "adapters/j/step-3/a",
    ]
    assert list(store.keys("adapters/j/final")) == ["adapters/j/final/a", "adapters/j/final/b"]
    assert list(store.keys("nothing")) == []
    assert 0 <= store.age_seconds("files/f") < 600
