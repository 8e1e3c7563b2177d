from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.blobstore import LocalBlobStore
from service.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.files.upload import (
    WRITE_BATCH,
    MultipartUpload,
    UploadLimits,
    boundary_of,
    receive_upload,
)

LIMITS = UploadLimits(max_file_bytes=1000, max_line_bytes=100)


def encode(data: dict[str, str], files: list[tuple[str, tuple[str, bytes]]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x", data=data, files=files)
    return request.read(), request.headers["content-type"]


def parse(body: bytes, content_type: str, store: LocalBlobStore, chunk: int = 5) -> MultipartUpload:
    upload = MultipartUpload(boundary_of(content_type), store, LIMITS)
    for start in range(0, len(body), chunk):
        upload.feed(body[start : start + chunk])
    upload.finish()
    return upload


def test_fields_and_file_arrive_in_tiny_chunks(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    body, content_type = encode(
        {"purpose": "fine-tune", "expires_after[anchor]": "created_at"},
        [("file", ("données.jsonl", b'{"a": 1}\n{"b": 2}\n'))],
    )

    received = parse(body, content_type, store).received

    assert received.fields == {"purpose": "fine-tune", "expires_after[anchor]": "created_at"}
    assert received.filename == "données.jsonl"
    assert received.blob is not None and received.blob.size == 18
    assert received.dataset_check is not None
    assert received.dataset_check.report.n_examples == 2
    received.blob.commit("files/file-x")
    assert b"".join(store.read("files/file-x")) == b'{"a": 1}\n{"b": 2}\n'


def test_no_line_check_when_purpose_is_known_to_be_something_else(tmp_path: Path) -> None:
    body, content_type = encode({"purpose": "user_data"}, [("file", ("a.bin", b"\xff\x00"))])

    assert parse(body, content_type, LocalBlobStore(tmp_path)).received.dataset_check is None


def test_the_size_limit_is_enforced_while_streaming(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    body, content_type = encode({"purpose": "user_data"}, [("file", ("a.bin", b"x" * 1001))])
    upload = MultipartUpload(boundary_of(content_type), store, LIMITS)

    with pytest.raises(PayloadTooLargeError):
        upload.feed(body)
    upload.received.discard()

    assert list((tmp_path / ".staging").iterdir()) == []


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"purpose": "batch", "model": "x"}, [("file", ("a", b"1"))], "model"),
        ({}, [("file", ("a", b"1")), ("file", ("b", b"2"))], "file"),
        ({}, [("attachment", ("a", b"1"))], "attachment"),
    ],
)
def test_unexpected_parts_are_refused(
    tmp_path: Path, data: dict[str, str], files: list[tuple[str, tuple[str, bytes]]], param: str
) -> None:
    body, content_type = encode(data, files)

    with pytest.raises(InvalidRequestError) as error:
        parse(body, content_type, LocalBlobStore(tmp_path), chunk=len(body))
    assert error.value.param == param


def test_a_truncated_body_is_refused(tmp_path: Path) -> None:
    body, content_type = encode({"purpose": "batch"}, [("file", ("a", b"12345"))])

    with pytest.raises(InvalidRequestError, match="ended early"):
        parse(body[:-20], content_type, LocalBlobStore(tmp_path))


@pytest.mark.parametrize("content_type", [None, "application/json", "multipart/form-data"])
def test_only_multipart_with_a_boundary_is_accepted(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        boundary_of(content_type)


async def body_of(data: bytes, chunk: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    """``data`` in chunks, as a socket delivers it; with ``fail_after``, the client goes away
    after that many bytes."""
    for start in range(0, len(data), chunk):
        if fail_after is not None and start >= fail_after:
            raise ConnectionResetError("the client went away")
        yield data[start : start + chunk]
        await asyncio.sleep(0)


def test_a_body_of_many_batches_is_fed_whole_and_in_order(tmp_path: Path) -> None:
    lines = b"".join(b'{"n": %d}\n' % i for i in range(400_000))  # ~4.6 MB: several batches
    body, content_type = encode({"purpose": "fine-tune"}, [("file", ("d.jsonl", lines))])
    store = LocalBlobStore(tmp_path)
    limits = UploadLimits(max_file_bytes=len(lines), max_line_bytes=100)

    received = asyncio.run(
        receive_upload({"content-type": content_type}, body_of(body, 65536), store, limits)
    )

    assert received.blob is not None and received.dataset_check is not None
    assert received.dataset_check.report.n_examples == 400_000
    received.blob.commit("files/file-x")
    assert b"".join(store.read("files/file-x")) == lines


def test_a_client_gone_mid_batch_leaves_no_staged_blob_and_no_feed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeding = threading.Event()
    fed_after_discard = []
    original_feed = MultipartUpload.feed

    def slow_feed(self: MultipartUpload, data: bytes) -> None:
        feeding.set()
        time.sleep(0.2)  # still feeding when the body fails
        try:
            original_feed(self, data)
        except RuntimeError:  # the blob writer was closed under it
            fed_after_discard.append(True)
            raise

    monkeypatch.setattr(MultipartUpload, "feed", slow_feed)
    data = b"x" * (3 * WRITE_BATCH)
    body, content_type = encode({"purpose": "user_data"}, [("file", ("a.bin", data))])
    limits = UploadLimits(max_file_bytes=len(data), max_line_bytes=100)

    with pytest.raises(ConnectionResetError):
        asyncio.run(
            receive_upload(
                {"content-type": content_type},
                body_of(body, 65536, fail_after=WRITE_BATCH + 65536),
                LocalBlobStore(tmp_path),
                limits,
            )
        )

    time.sleep(0.3)  # a feed left running would end by now
    assert feeding.is_set()
    assert fed_after_discard == []
    assert list((tmp_path / ".staging").iterdir()) == []
