"""Limits on a real server: per-key rate limits (OpenAI's 429 and ``x-ratelimit-*`` headers),
active jobs per project, storage quota per project, request size.

Limits are set per key and per project (as ``openft keys limits`` / ``openft projects limits``
do), so these tests share the API-only servers without limiting anyone else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from service.auth.service import AccessService, IssuedKey
from service.blobstore import BlobStore
from service.limits import estimated_tokens
from tests.e2e.conftest import CurlResult
from tests.e2e.test_fine_tuning_jobs import chat_lines
from tests.support.server import ServerProcess

Curl = Callable[..., CurlResult]


def test_requests_per_minute(curl: Curl, project: IssuedKey, access: AccessService) -> None:
    access.set_key_limits(project.key_id, requests_per_minute=3, tokens_per_minute=None)

    answers = [curl("GET", "/v1/files", key=project.key) for _ in range(3)]
    refused = curl("GET", "/v1/files", key=project.key)

    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    assert re.fullmatch(r"\d+(ms|s)|\dm\d+s", answers[0].headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in answers[0].headers
    assert refused.status == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "requests",
        "rate_limit_exceeded",
        None,
    )
    assert "requests per min (RPM)" in error["message"] and "Limit 3, Used 3" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_rate_limits_are_per_key(
    make_client: Callable[..., openai.OpenAI], project: IssuedKey, access: AccessService
) -> None:
    second = access.issue_key(project.project_slug)
    access.set_key_limits(project.key_id, requests_per_minute=1, tokens_per_minute=None)
    limited, other = make_client(project.key), make_client(second.key)

    limited.files.list()
    with pytest.raises(openai.RateLimitError) as refused:
        limited.files.list()

    assert refused.value.status_code == 429 and refused.value.code == "rate_limit_exceeded"
    assert other.files.list().data == []  # the project's other key has its own (no) limit


def test_a_refused_request_is_not_counted(
    curl: Curl, project: IssuedKey, access: AccessService
) -> None:
    access.set_key_limits(project.key_id, requests_per_minute=2, tokens_per_minute=None)
    assert curl("GET", "/v1/files", key=project.key).status == 200
    assert curl("GET", "/v1/files", key=project.key).status == 200
    for _ in range(3):
        assert curl("GET", "/v1/files", key=project.key).status == 429

    access.set_key_limits(project.key_id, requests_per_minute=3, tokens_per_minute=None)

    # Had the refusals counted, the window would hold 5 requests and this would be refused.
    assert curl("GET", "/v1/files", key=project.key).status == 200


def test_tokens_per_minute_refuses_before_the_model_runs(
    curl: Curl, project: IssuedKey, access: AccessService
) -> None:
    access.set_key_limits(project.key_id, requests_per_minute=None, tokens_per_minute=100)
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}]}

    too_many = curl(
        "POST",
        "/v1/chat/completions",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps({**body, "max_tokens": 200}),
        key=project.key,
    )
    fits = curl(
        "POST",
        "/v1/chat/completions",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps({**body, "max_tokens": 10}),
        key=project.key,
    )

    assert too_many.status == 429
    error = too_many.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert estimated_tokens({**body, "max_tokens": 200}) > 200
    assert f"Requested {estimated_tokens({**body, 'max_tokens': 200})}" in error["message"]
    assert "tokens per min (TPM)" in error["message"]
    # Admitted (this server runs no vLLM, so the model itself answers 503), and charged.
    assert fits.status == 503
    assert fits.headers["x-ratelimit-limit-tokens"] == "100"
    remaining = 100 - estimated_tokens({**body, "max_tokens": 10})
    assert fits.headers["x-ratelimit-remaining-tokens"] == str(remaining)


def test_active_jobs_per_project(
    client: openai.OpenAI, project: IssuedKey, access: AccessService
) -> None:
    access.set_project_limits(project.project_slug, max_active_jobs=1, storage_quota_bytes=None)
    training_file = client.files.create(file=("t.jsonl", chat_lines(10)), purpose="fine-tune").id
    first = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)

    with pytest.raises(openai.RateLimitError) as refused:
        client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)
    assert "1 active fine-tuning jobs, its limit is 1" in refused.value.message
    assert refused.value.response.headers["retry-after"] == "60"

    client.fine_tuning.jobs.cancel(first.id)
    second = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)
    assert second.status == "validating_files"
    assert [j.id for j in client.fine_tuning.jobs.list()] == [second.id, first.id]


@pytest.fixture
def quota_project(project: IssuedKey, access: AccessService) -> Iterator[IssuedKey]:
    access.set_project_limits(project.project_slug, max_active_jobs=None, storage_quota_bytes=1000)
    yield project


def test_storage_quota(
    client: openai.OpenAI, quota_project: IssuedKey, server_blobs: BlobStore
) -> None:
    kept = client.files.create(file=("a.bin", b"x" * 600), purpose="user_data")
    blobs_before = set(server_blobs.keys("files"))

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("b.bin", b"y" * 600), purpose="user_data")

    error = refused.value
    assert (error.code, error.param) == ("storage_quota_exceeded", "file")
    assert "holds 600 of its 1000-byte storage quota" in error.message
    assert [f.id for f in client.files.list()] == [kept.id]
    assert set(server_blobs.keys("files")) <= blobs_before  # the refused file left no blob

    with pytest.raises(openai.BadRequestError) as upload_refused:
        client.uploads.create(
            filename="c.bin", purpose="user_data", bytes=600, mime_type="application/octet-stream"
        )
    assert (upload_refused.value.code, upload_refused.value.param) == (
        "storage_quota_exceeded",
        "bytes",
    )

    client.files.delete(kept.id)
    assert client.files.create(file=("b.bin", b"y" * 600), purpose="user_data").bytes == 600


def test_storage_quota_counts_pending_upload_parts(
    client: openai.OpenAI, quota_project: IssuedKey
) -> None:
    upload = client.uploads.create(
        filename="c.bin", purpose="user_data", bytes=900, mime_type="application/octet-stream"
    )
    client.uploads.parts.create(upload_id=upload.id, data=b"z" * 900)

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("d.bin", b"w" * 200), purpose="user_data")
    assert refused.value.code == "storage_quota_exceeded"


def test_request_body_size_limit(server: ServerProcess, project: IssuedKey) -> None:
    headers = {"authorization": f"Bearer {project.key}", "content-type": "application/json"}
    huge = b'{"model": "tiny-chat", "training_file": "' + b"x" * (17 * 1024 * 1024) + b'"}'

    declared = httpx.post(server.api_url + "/fine_tuning/jobs", content=huge, headers=headers)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 1024 * 1024):
            yield huge[start : start + 1024 * 1024]

    streamed = httpx.post(server.api_url + "/fine_tuning/jobs", content=chunks(), headers=headers)

    for response in (declared, streamed):
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "OPENFT_MAX_REQUEST_BYTES" in error["message"]
    # A small chunked body still reaches the route whole.
    small = httpx.post(
        server.api_url + "/fine_tuning/jobs",
        content=iter([b'{"model": "tiny-chat", ', b'"training_file": "file-nope"}']),
        headers=headers,
    )
    assert small.status_code == 400 and small.json()["error"]["param"] == "training_file"
