"""``Idempotency-Key`` on file and job creation, through the SDK and curl on a real server."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from service.auth.service import IssuedKey
from service.blobstore import BlobStore
from tests.e2e.conftest import CurlResult
from tests.e2e.test_fine_tuning_jobs import chat_lines

Curl = Callable[..., CurlResult]


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def test_a_retried_file_upload_returns_the_first_file(
    client: openai.OpenAI, server_blobs: BlobStore
) -> None:
    first = client.files.create(
        file=("train.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("upload-1")
    )
    blobs = set(server_blobs.keys("files"))

    retry = client.files.create(
        file=("train.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("upload-1")
    )

    assert retry.id == first.id and retry.created_at == first.created_at
    assert [f.id for f in client.files.list()] == [first.id]
    assert set(server_blobs.keys("files")) == blobs  # the retry's bytes were not kept
    other = client.files.create(
        file=("train.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("upload-2")
    )
    assert other.id != first.id
    plain = client.files.create(file=("train.jsonl", chat_lines(10)), purpose="fine-tune")
    assert plain.id not in (first.id, other.id)


def test_a_key_reused_for_another_file_is_refused(client: openai.OpenAI) -> None:
    client.files.create(
        file=("a.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("k")
    )

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(
            file=("a.jsonl", chat_lines(11)), purpose="fine-tune", extra_headers=_key("k")
        )

    assert (refused.value.code, refused.value.param) == (
        "idempotency_key_reused",
        "Idempotency-Key",
    )
    assert len(client.files.list().data) == 1


def test_a_retried_job_returns_the_first_job(client: openai.OpenAI) -> None:
    training_file = client.files.create(file=("t.jsonl", chat_lines(10)), purpose="fine-tune").id

    def create(_: int) -> str:
        job = client.fine_tuning.jobs.create(
            model="tiny-chat", training_file=training_file, seed=3, extra_headers=_key("job-1")
        )
        return job.id

    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(create, range(8)))

    assert len(ids) == 1
    assert [j.id for j in client.fine_tuning.jobs.list()] == list(ids)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model="tiny-chat", training_file=training_file, seed=4, extra_headers=_key("job-1")
        )
    assert refused.value.code == "idempotency_key_reused"


def test_the_retry_shows_the_job_as_it_is_now(client: openai.OpenAI) -> None:
    training_file = client.files.create(file=("t.jsonl", chat_lines(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training_file, extra_headers=_key("j")
    )
    client.fine_tuning.jobs.cancel(job.id)

    retry = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training_file, extra_headers=_key("j")
    )

    assert (retry.id, retry.status) == (job.id, "cancelled")


def test_keys_belong_to_one_project(
    client: openai.OpenAI,
    make_client: Callable[..., openai.OpenAI],
    new_project: Callable[[], IssuedKey],
) -> None:
    other = make_client(new_project().key)
    mine = client.files.create(
        file=("t.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("same")
    )

    theirs = other.files.create(
        file=("t.jsonl", chat_lines(10)), purpose="fine-tune", extra_headers=_key("same")
    )

    assert theirs.id != mine.id
    assert [f.id for f in other.files.list()] == [theirs.id]


def test_a_bad_key_is_refused_before_the_upload(curl: Curl, project: IssuedKey, tmp_path) -> None:
    data = tmp_path / "t.jsonl"
    data.write_bytes(chat_lines(10))

    result = curl(
        "POST",
        "/v1/files",
        "-H",
        "Idempotency-Key: " + "x" * 256,
        "-F",
        "purpose=fine-tune",
        "-F",
        f"file=@{data}",
        key=project.key,
    )

    assert result.status == 400
    assert result.json()["error"]["param"] == "Idempotency-Key"
    assert curl("GET", "/v1/files", key=project.key).json()["data"] == []
