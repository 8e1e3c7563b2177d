"""Receive a ``multipart/form-data`` file upload as a stream, straight into a staged blob.

Nothing is spooled to a temporary file by the web framework: the file part goes to the blob
store as it arrives, the size limit is enforced while streaming, and a fine-tune upload is
checked line by line on the way. Whatever goes wrong, the staged blob is discarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from service.blobstore import BlobStore, BlobWriter
from service.datasets.validator import DatasetValidator
from service.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

FORM_FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
MAX_FIELD_BYTES = 64 * 1024
WRITE_BATCH = 1024 * 1024  # hop to a worker thread once per MiB, not per network chunk
MULTIPART_SLACK = 1024 * 1024  # room for part headers and form fields around the file
DRAIN_AFTER_REJECT = 64 * 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_line_bytes: int
    file_field: str = "file"  # the form part holding the bytes ("data" for an upload part)
    text_fields: tuple[str, ...] = FORM_FIELDS
    check_fine_tune: bool = True  # run the JSONL structure check when the purpose is fine-tune


@dataclass
class ReceivedUpload:
    """The form fields and the staged file of one upload, not yet committed."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    blob: BlobWriter | None = None
    dataset_check: DatasetValidator | None = None
    content_hash: Any = None  # hashlib's sha256 of the file's bytes, when asked for

    @property
    def content_sha256(self) -> str | None:
        return None if self.content_hash is None else str(self.content_hash.hexdigest())

    def discard(self) -> None:
        if self.blob is not None:
            self.blob.abort()


class MultipartUpload:
    """Synchronous push parser: ``feed`` it body bytes, then ``finish``."""

    def __init__(
        self, boundary: bytes, blobs: BlobStore, limits: UploadLimits, *, hash_content: bool = False
    ) -> None:
        self.received = ReceivedUpload(content_hash=hashlib.sha256() if hash_content else None)
        self._blobs = blobs
        self._limits = limits
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._in_file = False
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise InvalidRequestError(f"Malformed multipart body: {exc}", param="file") from exc

    def finish(self) -> ReceivedUpload:
        if not self._ended:
            raise InvalidRequestError("Malformed multipart body: it ended early.", param="file")
        if self.received.dataset_check is not None:
            self.received.dataset_check.finish()
        return self.received

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value.clear()
        self._in_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == self._limits.file_field:
            self._start_file(filename)
        elif name in self._limits.text_fields:
            self._field_name = name
        else:
            raise InvalidRequestError(f"Unrecognized request argument supplied: {name}", param=name)

    def _start_file(self, filename: bytes | None) -> None:
        field = self._limits.file_field
        if self.received.blob is not None:
            raise InvalidRequestError(
                f"Only one '{field}' may be uploaded per request.", param=field
            )
        self.received.filename = filename.decode("utf-8", "replace") if filename else "upload"
        self.received.blob = self._blobs.stage()
        purpose = self.received.fields.get("purpose", "fine-tune")
        if self._limits.check_fine_tune and purpose == "fine-tune":
            self.received.dataset_check = DatasetValidator(
                max_line_bytes=self._limits.max_line_bytes, structure_only=True
            )
        self._in_file = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._in_file:
            self._write_file_chunk(chunk)
        elif len(self._field_value) + len(chunk) > MAX_FIELD_BYTES:
            raise InvalidRequestError(f"'{self._field_name}' is too long.", param=self._field_name)
        else:
            self._field_value += chunk

    def _write_file_chunk(self, chunk: bytes) -> None:
        blob = self.received.blob
        assert blob is not None
        if blob.size + len(chunk) > self._limits.max_file_bytes:
            raise file_too_large(self._limits)
        blob.write(chunk)
        if self.received.content_hash is not None:
            self.received.content_hash.update(chunk)
        if self.received.dataset_check is not None:
            self.received.dataset_check.feed(chunk)

    def _on_part_end(self) -> None:
        if self._field_name is not None:
            try:
                self.received.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(
                    f"'{self._field_name}' is not valid UTF-8.", param=self._field_name
                ) from exc
        self._in_file = False

    def _on_end(self) -> None:
        self._ended = True


def file_too_large(limits: UploadLimits) -> PayloadTooLargeError:
    limit = limits.max_file_bytes
    size = f"{limit} bytes ({limit / 1024 / 1024:.0f} MiB)"
    if limits.file_field != "file":
        return PayloadTooLargeError(
            f"Upload part is too large: the maximum size of a part is {size}.",
            param=limits.file_field,
            code="file_too_large",
        )
    return PayloadTooLargeError(
        f"File is too large: the maximum size is {size}. "
        "Larger files can be sent in parts with the Uploads API.",
        param="file",
        code="file_too_large",
    )


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaTypeError(
            "Files must be uploaded as multipart/form-data with a 'file' part and a "
            "'purpose' field.",
            param="file",
        )
    return boundary


async def receive_upload(
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    blobs: BlobStore,
    limits: UploadLimits,
    *,
    hash_content: bool = False,
) -> ReceivedUpload:
    """Stream the request body into a staged blob; on any error nothing is kept.

    ``hash_content``: also compute the file's SHA-256 (to recognise a retried request)."""
    boundary = boundary_of(headers.get("content-type"))
    declared = int(headers.get("content-length") or 0)
    if declared > limits.max_file_bytes + MULTIPART_SLACK:
        await _drain(body, DRAIN_AFTER_REJECT)
        raise file_too_large(limits)
    upload = MultipartUpload(boundary, blobs, limits, hash_content=hash_content)
    try:
        await _pump(body, upload)
        return upload.finish()
    except PayloadTooLargeError:
        upload.received.discard()
        await _drain(body, DRAIN_AFTER_REJECT)
        raise
    except BaseException:
        upload.received.discard()
        raise


async def _pump(body: AsyncIterator[bytes], upload: MultipartUpload) -> None:
    batch = bytearray()
    async for chunk in body:
        batch += chunk
        if len(batch) >= WRITE_BATCH:
            await run_in_threadpool(upload.feed, bytes(batch))
            batch.clear()
    if batch:
        await run_in_threadpool(upload.feed, bytes(batch))


async def _drain(body: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop the rest of a rejected body so the client gets the error, not a reset."""
    async for chunk in body:
        budget -= len(chunk)
        if budget <= 0:
            return
