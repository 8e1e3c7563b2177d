"""S3 blob store (boto3): any S3 API (AWS, SeaweedFS, MinIO, Ceph) at ``s3://bucket/prefix``.

S3 has no rename, so staging works like this: a blob smaller than one part is buffered and written
with one ``PutObject`` to its final key at commit (atomic). A larger one streams as a multipart
upload to a key under ``.staging/``, invisible until completed; commit completes it, copies it to
the final key on the server (multipart copy for large objects) and deletes the staged object.
Abandoned multipart uploads and staged objects are removed by ``sweep_staging``.

An S3 that cannot be reached (after boto3's bounded retries) or that answers with a server error
raises ``StorageUnavailableError``: the API's 503, never a hang or a traceback.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from service.blobstore.base import check_key
from service.errors import StorageUnavailableError

STAGING = ".staging"
PART_BYTES = 16 * 1024 * 1024  # S3 wants parts of at least 5 MiB (but the last)
READ_CHUNK = 1024 * 1024
_MISSING = ("404", "NoSuchKey", "NotFound")
_FULL = ("XMinioStorageFull", "InsufficientStorage")  # MinIO and others answer 507 when full


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")


class S3BlobWriter:
    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._buffer = bytearray()
        self._size = 0
        self._staged_key: str | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("blob writer is closed")
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= PART_BYTES:
            with s3_errors():
                self._send_part(bytes(self._buffer[:PART_BYTES]))
            del self._buffer[:PART_BYTES]

    def commit(self, key: str) -> None:
        if self._closed:
            raise RuntimeError("blob writer is closed")
        with s3_errors():
            self._complete(self._store.object_key(key))
        self._buffer.clear()
        self._closed = True

    def _complete(self, target: str) -> None:
        client, bucket = self._store.client, self._store.location.bucket
        if self._upload_id is None:
            client.put_object(Bucket=bucket, Key=target, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._send_part(bytes(self._buffer))
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=self._staged_key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        client.copy(
            {"Bucket": bucket, "Key": self._staged_key},
            bucket,
            target,
            Config=TransferConfig(multipart_threshold=PART_BYTES * 8),
        )
        client.delete_object(Bucket=bucket, Key=self._staged_key)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        if self._upload_id is not None:
            # Gone already, or S3 unreachable: the sweep removes what is left.
            with contextlib.suppress(ClientError, BotoConnectionError, HTTPClientError):
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.location.bucket,
                    Key=self._staged_key,
                    UploadId=self._upload_id,
                )

    def _send_part(self, data: bytes) -> None:
        client, bucket = self._store.client, self._store.location.bucket
        if self._upload_id is None:
            self._staged_key = self._store.object_key(f"{STAGING}/{uuid.uuid4().hex}", staging=True)
            created = client.create_multipart_upload(Bucket=bucket, Key=self._staged_key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        sent = client.upload_part(
            Bucket=bucket,
            Key=self._staged_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})


class S3BlobStore:
    """Blobs as objects ``<prefix><key>`` in one bucket."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_attempts: int = 3,
        connect_timeout_s: float = 5,
        read_timeout_s: float = 30,
    ) -> None:
        self.location = S3Location.parse(url)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                # Bounded: an unreachable S3 fails the request with a 503 within
                # max_attempts x (connect or read timeout) plus a few seconds of backoff.
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
            ),
        )

    def object_key(self, key: str, *, staging: bool = False) -> str:
        return self.location.prefix + (key if staging else check_key(key))

    def stage(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        try:  # before the first chunk is asked for, as the local store does
            with s3_errors():
                body = self.client.get_object(
                    Bucket=self.location.bucket, Key=self.object_key(key)
                )["Body"]
        except ClientError as exc:
            raise _not_found(exc, key) from exc

        def chunks() -> Iterator[bytes]:
            try:
                with s3_errors():
                    yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with s3_errors():
            self.client.delete_object(Bucket=self.location.bucket, Key=self.object_key(key))

    def keys(self, prefix: str) -> Iterator[str]:
        start = self.object_key(prefix).rstrip("/") + "/"
        for entry in self._objects(start):
            yield entry["Key"].removeprefix(self.location.prefix)

    def age_seconds(self, key: str) -> float:
        modified: float = self._head(key)["LastModified"].timestamp()
        return time.time() - modified

    def sweep_staging(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        staging = self.object_key(f"{STAGING}/", staging=True)
        swept = 0
        for entry in list(self._objects(staging)):
            if entry["LastModified"].timestamp() < cutoff:
                self.delete_object(entry["Key"])
                swept += 1
        uploads = self.client.get_paginator("list_multipart_uploads")
        with s3_errors():
            for page in uploads.paginate(Bucket=self.location.bucket, Prefix=staging):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.location.bucket,
                            Key=upload["Key"],
                            UploadId=upload["UploadId"],
                        )
                        swept += 1
        return swept

    def delete_object(self, object_key: str) -> None:
        """Delete by object key (prefix included), e.g. a staged object."""
        with s3_errors():
            self.client.delete_object(Bucket=self.location.bucket, Key=object_key)

    def prepare(self) -> None:
        """Create the bucket if it does not exist (a new MinIO or SeaweedFS, a backup target)."""
        with s3_errors():
            try:
                self.client.head_bucket(Bucket=self.location.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.location.bucket)

    def _head(self, key: str) -> dict[str, Any]:
        try:
            with s3_errors():
                head: dict[str, Any] = self.client.head_object(
                    Bucket=self.location.bucket, Key=self.object_key(key)
                )
        except ClientError as exc:
            raise _not_found(exc, key) from exc
        return head

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2")
        with s3_errors():
            for page in pages.paginate(Bucket=self.location.bucket, Prefix=prefix):
                yield from sorted(page.get("Contents", []), key=lambda entry: entry["Key"])


@contextlib.contextmanager
def s3_errors() -> Iterator[None]:
    """S3 down or failing (after boto3's retries) becomes the API's 503; a client error such as
    a missing key is left to the caller."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StorageUnavailableError(
            "The file store cannot be reached, so nothing of this request was kept. Try again "
            "shortly, or tell your OpenFT operator if the error persists."
        ) from exc
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if str(exc.response.get("Error", {}).get("Code", "")) in _FULL or status == 507:
            raise StorageUnavailableError(
                "The file store is out of space, so nothing of this request was kept. Try again "
                "later, or tell your OpenFT operator if the error persists."
            ) from exc
        if status >= 500:
            raise StorageUnavailableError(
                f"The file store failed ({exc.response.get('Error', {}).get('Code')}); nothing "
                "of this request was kept. Try again shortly."
            ) from exc
        raise


def _not_found(exc: ClientError, key: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return FileNotFoundError(key) if code in _MISSING else exc
