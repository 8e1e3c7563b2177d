from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.blobstore import InvalidBlobKeyError, LocalBlobStore


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
