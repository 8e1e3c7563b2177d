from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.blobstore import InvalidBlobKeyError, LocalBlobStore


def test_a_staged_blob_is_invisible_until_committed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    writer = store.stage()
    writer.write(b"hello ")
    writer.write(b"world")

    assert not store.exists("files/file-a")
    assert list(store.keys("files")) == []

    writer.commit("files/file-a")

    assert b"".join(store.read("files/file-a", chunk_size=4)) == b"hello world"
    assert store.size("files/file-a") == 11
    assert list(store.keys("files")) == ["files/file-a"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    writer = store.stage()
    writer.write(b"partial")
    writer.abort()
    writer.abort()

    assert list((tmp_path / ".staging").iterdir()) == []


def test_delete_is_idempotent_and_reading_a_missing_blob_fails(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.delete("files/file-none")

    with pytest.raises(FileNotFoundError):
        store.read("files/file-none")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "files/../../x", "/abs", "files//x", ".staging/x", ""]
)
def test_keys_cannot_escape_the_store(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidBlobKeyError):
        LocalBlobStore(tmp_path).path_of(key)


def test_sweep_staging_removes_only_abandoned_writes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.stage().write(b"abandoned an hour ago")
    stale = time.time() - 7200
    (abandoned,) = (tmp_path / ".staging").iterdir()
    os.utime(abandoned, (stale, stale))
    store.stage().write(b"still being written")

    assert store.sweep_staging(older_than_s=3600) == 1
    assert not abandoned.exists()
    assert len(list((tmp_path / ".staging").iterdir())) == 1
