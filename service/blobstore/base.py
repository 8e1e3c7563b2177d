"""The blob-store port: staged streamed writes committed atomically, streamed reads, deletes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

# Segments of ids and fixed words only: no dots at the start, no empty segments, no "..".
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")


class InvalidBlobKeyError(ValueError):
    pass


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or len(key) > 512:
        raise InvalidBlobKeyError(f"invalid blob key: {key!r}")
    return key


class BlobWriter(Protocol):
    """A blob being written under a temporary name; invisible until ``commit``."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def commit(self, key: str) -> None:
        """Make the written bytes visible under ``key`` in one step (replacing any old blob)."""

    def abort(self) -> None:
        """Discard what was written; safe to call more than once and after ``commit``."""


class BlobStore(Protocol):
    def prepare(self) -> None:
        """Create what the store needs if it is missing (an S3 bucket); called at start-up."""

    def stage(self) -> BlobWriter: ...

    def read(self, key: str, chunk_size: int = ...) -> Iterator[bytes]:
        """Stream a committed blob; raises ``FileNotFoundError`` if it is missing."""

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Committed keys under ``prefix`` (a folder such as ``files``)."""

    def age_seconds(self, key: str) -> float: ...

    def sweep_staging(self, older_than_s: float) -> int:
        """Delete staged writes abandoned for longer than ``older_than_s``; returns how many."""
