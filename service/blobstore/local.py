"""Local-folder blob store: staged files in ``.staging/``, committed with ``os.replace``."""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from service.blobstore.base import check_key
from service.errors import StorageUnavailableError

STAGING = ".staging"
READ_CHUNK = 1024 * 1024
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore, path: Path) -> None:
        self._store = store
        self._path = path
        with _disk_errors():
            self._file: BinaryIO | None = path.open("xb")
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise RuntimeError("blob writer is closed")
        with _disk_errors():
            self._file.write(data)
        self._size += len(data)

    def commit(self, key: str) -> None:
        if self._file is None:
            raise RuntimeError("blob writer is closed")
        target = self._store.path_of(key)
        with _disk_errors():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path, target)
            _fsync_dir(target.parent)

    def abort(self) -> None:
        file, self._file = self._file, None
        try:
            if file is not None:
                # Closing flushes what is buffered: on a full disk that fails again. The staged
                # file goes anyway.
                with contextlib.suppress(OSError):
                    file.close()
        finally:
            self._path.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as plain files under ``root``; a key ``a/b`` is the file ``root/a/b``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / STAGING
        self._staging.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """Nothing to do: the folders exist from the start."""

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    def stage(self) -> LocalBlobWriter:
        return LocalBlobWriter(self, self._staging / uuid.uuid4().hex)

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        handle = self.path_of(key).open("rb")  # raises before the first chunk is asked for

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(chunk_size):
                    yield chunk

        return chunks()

    def size(self, key: str) -> int:
        return self.path_of(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.path_of(prefix)
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.root).as_posix()

    def age_seconds(self, key: str) -> float:
        return time.time() - self.path_of(key).stat().st_mtime

    def sweep_staging(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        swept = 0
        for path in self._staging.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    swept += 1
        return swept


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A full disk is the client's 503 (try later), not a server error with a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUT_OF_SPACE:
            raise
        raise StorageUnavailableError(
            "The file store is out of space, so nothing of this request was kept. Try again "
            "later, or tell your OpenFT operator if the error persists."
        ) from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
