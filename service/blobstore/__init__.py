"""Blob storage: the port (``BlobStore``) and its backends. Keys are built from object ids only."""

from __future__ import annotations

from service.blobstore.base import BlobStore, BlobWriter, InvalidBlobKeyError, check_key
from service.blobstore.local import LocalBlobStore
from service.settings import Settings

__all__ = [
    "BlobStore",
    "BlobWriter",
    "InvalidBlobKeyError",
    "LocalBlobStore",
    "check_key",
    "open_blob_store",
]


def open_blob_store(settings: Settings) -> BlobStore:
    """The deployment's blob store: S3 when ``blob_url`` is set, else the local folder."""
    if settings.blob_url:
        from service.blobstore.s3 import S3BlobStore  # boto3 loads only where S3 is used

        return S3BlobStore(
            settings.blob_url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    return LocalBlobStore(settings.blob_root)
