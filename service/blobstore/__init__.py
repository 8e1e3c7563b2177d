"""Blob storage: the port (``BlobStore``) and its backends. Keys are built from object ids only."""

from service.blobstore.base import BlobStore, BlobWriter, InvalidBlobKeyError, check_key
from service.blobstore.local import LocalBlobStore

__all__ = ["BlobStore", "BlobWriter", "InvalidBlobKeyError", "LocalBlobStore", "check_key"]
