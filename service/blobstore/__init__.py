"""Blob storage: the port (``BlobStore``) and its backends. Keys are built from object ids only."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from service.blobstore.base import BlobStore, BlobWriter, InvalidBlobKeyError, check_key
from service.blobstore.keys import FOLDERS
from service.blobstore.local import LocalBlobStore
from service.settings import Settings

__all__ = [
    "BlobStore",
    "BlobWriter",
    "InvalidBlobKeyError",
    "LocalBlobStore",
    "check_key",
    "copy_blobs",
    "download_folder",
    "open_blob_location",
    "open_blob_store",
    "write_blob",
]


def open_blob_store(settings: Settings) -> BlobStore:
    """The deployment's blob store: S3 when ``blob_url`` is set, else the local folder."""
    return open_blob_location(settings.blob_url or str(settings.blob_root), settings)


def open_blob_location(location: str, settings: Settings) -> BlobStore:
    """A blob store at ``location``: ``s3://bucket/prefix`` (reached with the deployment's S3
    endpoint and credentials) or a local folder."""
    if location.startswith("s3://"):
        from service.blobstore.s3 import S3BlobStore  # boto3 loads only where S3 is used

        return S3BlobStore(
            location,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            max_attempts=settings.s3_max_attempts,
            connect_timeout_s=settings.s3_connect_timeout_seconds,
            read_timeout_s=settings.s3_read_timeout_seconds,
        )
    return LocalBlobStore(Path(location))


def write_blob(store: BlobStore, key: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` as blob ``key``: staged, then committed whole, or nothing at all."""
    writer = store.stage()
    try:
        for chunk in chunks:
            writer.write(chunk)
        writer.commit(key)
    except BaseException:
        writer.abort()
        raise


def download_folder(store: BlobStore, prefix: str, folder: Path) -> None:
    """Write every blob under ``prefix`` into ``folder``, named by the last part of its key."""
    for key in store.keys(prefix):
        with (folder / key.rsplit("/", 1)[-1]).open("wb") as handle:
            for chunk in store.read(key):
                handle.write(chunk)


def copy_blobs(source: BlobStore, target: BlobStore) -> tuple[int, int]:
    """Copy every blob (backup or restore); returns (blobs, bytes). A blob already in the target
    with the same size is skipped, so an interrupted copy can simply be run again."""
    target.prepare()
    copied = total = 0
    for folder in FOLDERS:
        for key in source.keys(folder):
            size = source.size(key)
            if target.exists(key) and target.size(key) == size:
                continue
            write_blob(target, key, source.read(key))
            copied, total = copied + 1, total + size
    return copied, total
