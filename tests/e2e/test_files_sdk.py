"""The Files API driven by the real openai SDK against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from service.auth.service import IssuedKey
from service.blobstore import BlobStore
from service.blobstore.keys import file_key
from tests.support.server import ServerProcess


def training_lines(n: int) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_create_retrieve_download_delete(
    client: openai.OpenAI, server_blobs: BlobStore, tmp_path: Path
) -> None:
    data = training_lines(12)
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)

    created = client.files.create(file=path, purpose="fine-tune")

    assert created.id.startswith("file-") and len(created.id) == len("file-") + 22
    assert (created.object, created.purpose, created.filename) == (
        "file",
        "fine-tune",
        "train.jsonl",
    )
    assert created.bytes == len(data)
    assert created.status == "processed"
    assert created.expires_at is None
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == data
    assert server_blobs.exists(file_key(created.id))

    deleted = client.files.delete(created.id)

    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    assert not server_blobs.exists(file_key(created.id))
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(created.id)
    assert missing.value.param == "id"
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_upload_from_bytes_stream_and_non_ascii_name(client: openai.OpenAI) -> None:
    from_bytes = client.files.create(file=("你好.txt", b"hello"), purpose="user_data")
    from_stream = client.files.create(file=io.BytesIO(b"raw"), purpose="assistants")

    assert from_bytes.filename == "你好.txt"
    assert client.files.content(from_bytes.id).read() == b"hello"
    assert from_stream.bytes == 3 and from_stream.filename == "upload"


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_list_auto_paginates_across_pages_in_order(
    client: openai.OpenAI, order: str, make_client: Callable[..., openai.OpenAI], project: IssuedKey
) -> None:
    created = [
        client.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data").id for i in range(25)
    ]
    requests: list[str] = []
    counting = make_client(project.key)
    counting._client.event_hooks["request"].append(lambda r: requests.append(str(r.url)))

    listed = [f.id for f in counting.files.list(limit=10, order=order)]  # type: ignore[arg-type]

    assert listed == (created if order == "asc" else created[::-1])
    assert len(requests) == 3
    assert f"after={listed[9]}" in requests[1] and f"after={listed[19]}" in requests[2]


def test_list_page_envelope(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data").id for i in range(3)]

    first = client.files.list(limit=2)
    second = client.files.list(limit=2, after=first.data[-1].id)

    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert (first.first_id, first.last_id) == (ids[2], ids[1])  # type: ignore[attr-defined]
    assert [f.id for f in second.data] == [ids[0]] and second.has_more is False
    assert client.files.list().data[0].id == ids[-1]  # default: newest first


def test_list_filters_by_purpose(client: openai.OpenAI) -> None:
    tune = client.files.create(file=("t.jsonl", training_lines(1)), purpose="fine-tune")
    client.files.create(file=("b.txt", b"b"), purpose="user_data")

    assert [f.id for f in client.files.list(purpose="fine-tune")] == [tune.id]


def test_expires_after(client: openai.OpenAI) -> None:
    expiring = client.files.create(
        file=("e.txt", b"e"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    batch = client.files.create(file=("b.jsonl", b"{}\n"), purpose="batch")

    assert expiring.expires_at == expiring.created_at + 3600
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600


def test_expires_after_out_of_range(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(
            file=("e.txt", b"e"),
            purpose="user_data",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert error.value.param == "expires_after.seconds"
    assert "60 is less than the minimum of 3600" in error.value.message


def test_first_start_printed_a_working_key(
    server: ServerProcess, make_client: Callable[..., openai.OpenAI]
) -> None:
    key = server.bootstrap_key()

    assert key is not None
    assert make_client(key).files.list().object == "list"


def test_oversize_upload_is_refused_and_nothing_is_kept(
    client: openai.OpenAI, server_blobs: BlobStore
) -> None:
    with pytest.raises(openai.APIStatusError) as error:
        client.files.create(file=("big.bin", b"0" * (3 * 1024 * 1024)), purpose="user_data")

    assert error.value.status_code == 413
    assert error.value.code == "file_too_large"
    assert client.files.list().data == []
    assert server_blobs.sweep_staging(older_than_s=0) == 0  # nothing was left staged
