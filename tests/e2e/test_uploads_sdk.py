"""The Uploads API through the real openai SDK, on every server variant (local blobs and S3)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from sqlalchemy import update

from service.auth.service import IssuedKey
from service.db.database import Database
from service.db.models import Upload as UploadRow

MIB = 1024 * 1024


def jsonl(n: int, width: int = 200) -> bytes:
    row = {
        "messages": [
            {"role": "user", "content": "q" * width},
            {"role": "assistant", "content": "a"},
        ]
    }
    return b"".join(json.dumps({**row, "n": i}).encode() + b"\n" for i in range(n))


def test_a_chunked_upload_through_the_sdk_becomes_a_file(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    content = jsonl(30_000)  # ~7 MB: several parts of 1 MiB
    path = tmp_path / "big.jsonl"
    path.write_bytes(content)

    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="fine-tune", part_size=MIB
    )

    assert upload.status == "completed" and upload.object == "upload"
    assert upload.id.startswith("upload_") and len(upload.id) == len("upload_") + 32
    assert upload.bytes == len(content) and upload.filename == "big.jsonl"
    assert upload.file is not None and upload.file.bytes == len(content)
    assert upload.file.purpose == "fine-tune" and upload.file.status == "processed"
    assert client.files.content(upload.file.id).read() == content
    assert upload.file.id in [f.id for f in client.files.list()]


def start(client: openai.OpenAI, content: bytes, **options: object) -> tuple[str, list[str]]:
    upload = client.uploads.create(
        bytes=len(content),
        filename="t.jsonl",
        mime_type="text/jsonl",
        purpose="fine-tune",
        **options,  # type: ignore[arg-type]
    )
    assert upload.status == "pending" and upload.file is None
    assert upload.expires_at == upload.created_at + 3600
    half = len(content) // 2
    parts = [
        client.uploads.parts.create(upload.id, data=piece).id
        for piece in (content[:half], content[half:])
    ]
    return upload.id, parts


def test_parts_are_joined_in_the_given_order_with_md5_checked(client: openai.OpenAI) -> None:
    content = jsonl(40)
    upload_id, (first, second) = start(client, content)

    with pytest.raises(openai.BadRequestError) as wrong_md5:
        client.uploads.complete(upload_id, part_ids=[first, second], md5="0" * 32)
    with pytest.raises(openai.BadRequestError) as wrong_order:
        client.uploads.complete(upload_id, part_ids=[second, first])  # not JSONL any more
    done = client.uploads.complete(
        upload_id, part_ids=[first, second], md5=hashlib.md5(content).hexdigest()
    )

    assert wrong_md5.value.param == "md5" and "md5" in wrong_md5.value.message
    assert wrong_order.value.code == "invalid_file_format"
    assert done.status == "completed" and done.file is not None
    assert client.files.content(done.file.id).read() == content
    with pytest.raises(openai.BadRequestError) as again:
        client.uploads.complete(upload_id, part_ids=[first, second])
    assert "is completed" in again.value.message


def test_a_byte_count_that_does_not_match_is_refused(client: openai.OpenAI) -> None:
    content = jsonl(20)
    upload_id, (first, _second) = start(client, content)

    with pytest.raises(openai.BadRequestError) as short:
        client.uploads.complete(upload_id, part_ids=[first])
    with pytest.raises(openai.BadRequestError) as unknown:
        client.uploads.complete(upload_id, part_ids=[first, "part_" + "0" * 32])

    assert short.value.param == "part_ids"
    assert f"created with bytes={len(content)}" in short.value.message
    assert unknown.value.param == "part_ids" and "has no part" in unknown.value.message


def test_a_cancelled_upload_takes_no_more_parts(client: openai.OpenAI) -> None:
    content = jsonl(10)
    upload_id, parts = start(client, content)

    cancelled = client.uploads.cancel(upload_id)

    assert cancelled.status == "cancelled" and cancelled.file is None
    with pytest.raises(openai.BadRequestError) as late_part:
        client.uploads.parts.create(upload_id, data=b"{}\n")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload_id, part_ids=parts)
    assert "is cancelled" in late_part.value.message


def test_an_upload_expires_after_its_hour(client: openai.OpenAI, server_db: Database) -> None:
    content = jsonl(10)
    upload_id, parts = start(client, content)
    with server_db.write() as session:  # an hour passes
        session.execute(update(UploadRow).where(UploadRow.id == upload_id).values(expires_at=0))

    with pytest.raises(openai.BadRequestError) as late:
        client.uploads.complete(upload_id, part_ids=parts)

    assert "is expired" in late.value.message


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"mime_type": "image/png"}, "mime_type"),
        ({"purpose": "world_domination"}, "purpose"),
        ({"bytes": 9 * 1024 * MIB}, "bytes"),
    ],
)
def test_create_is_refused_in_openai_words(
    client: openai.OpenAI, options: dict[str, object], param: str
) -> None:
    body = {"bytes": 10, "filename": "t.jsonl", "mime_type": "text/jsonl", "purpose": "fine-tune"}

    with pytest.raises(openai.BadRequestError) as refused:
        client.uploads.create(**{**body, **options})  # type: ignore[arg-type]

    assert refused.value.param == param


def test_a_part_over_64_mb_is_refused_and_nothing_is_kept(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=65 * MIB, filename="t.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )

    with pytest.raises(openai.APIStatusError) as refused:
        client.uploads.parts.create(upload.id, data=b"x" * (64 * MIB + 1))

    assert refused.value.status_code == 413 and refused.value.param == "data"


def test_other_projects_cannot_touch_an_upload(
    make_client: Callable[..., openai.OpenAI], new_project: Callable[[], IssuedKey]
) -> None:
    alice, bob = make_client(new_project().key), make_client(new_project().key)
    content = jsonl(10)
    upload_id, parts = start(alice, content)

    for attempt in (
        lambda: bob.uploads.parts.create(upload_id, data=b"{}\n"),
        lambda: bob.uploads.complete(upload_id, part_ids=parts),
        lambda: bob.uploads.cancel(upload_id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert alice.uploads.complete(upload_id, part_ids=parts).status == "completed"
