"""What the API fuzz test found, pinned on all three servers (SQLite, PostgreSQL, S3 blobs)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.auth.service import IssuedKey
from tests.support.server import ServerProcess

NUL_MESSAGE = "Text in a request cannot contain NUL (0x00) characters."


@pytest.mark.parametrize(
    ("method", "path", "options"),
    [
        ("GET", "/v1/files", {"params": {"purpose": "fine\x00tune"}}),
        ("GET", "/v1/files", {"params": {"after": "file-\x00"}}),
        ("GET", "/v1/files/file-%00abc", {}),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00/events", {}),
        ("GET", "/v1/models/ft:tiny-chat:x%00", {}),
        ("POST", "/v1/uploads/upload_%00/cancel", {}),
        (
            "POST",
            "/v1/uploads",
            {
                "json": {
                    "filename": "a\x00b.jsonl",
                    "purpose": "fine-tune",
                    "bytes": 3,
                    "mime_type": "text/jsonl",
                }
            },
        ),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": "tiny-chat", "training_file": "\x00"}}),
    ],
)
def test_nul_characters_are_a_client_error_not_a_500(
    server: ServerProcess, project: IssuedKey, method: str, path: str, options: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {project.key}"}

    response = httpx.request(method, server.base_url + path, headers=headers, **options)

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error", error
        if response.status_code == 400 and "NUL" in error["message"]:
            assert error["message"] == NUL_MESSAGE


def test_a_405_names_every_method_of_the_path(server: ServerProcess, project: IssuedKey) -> None:
    response = httpx.put(
        server.base_url + "/v1/files", headers={"Authorization": f"Bearer {project.key}"}
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


CHAT = '{"model": "tiny-chat", "messages": [{"role": "user", "content": "Hi"}], '
JOB = '{"model": "tiny-chat", "training_file": "file-abc", '


@pytest.mark.parametrize(
    ("path", "content", "param"),
    [
        ("/v1/chat/completions", CHAT + '"temperature": NaN}', "temperature"),
        ("/v1/chat/completions", CHAT + '"top_p": 1e999}', "top_p"),
        ("/v1/completions", '{"model": "tiny-chat", "prompt": "Hi", "top_p": -1e999}', "top_p"),
        (
            "/v1/fine_tuning/jobs",
            JOB + '"hyperparameters": {"learning_rate_multiplier": NaN}}',
            "hyperparameters.learning_rate_multiplier",
        ),
        (
            "/v1/fine_tuning/jobs",
            JOB + '"hyperparameters": {"learning_rate_multiplier": 1e999}}',
            "hyperparameters.learning_rate_multiplier",
        ),
        (
            "/v1/fine_tuning/jobs",
            JOB + '"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": Infinity}}}}',
            "method.dpo.hyperparameters.beta",
        ),
        ("/v1/fine_tuning/jobs", JOB + '"seed": ' + "9" * 400 + "}", "seed"),
        ("/v1/uploads", '{"filename": "a.jsonl", "purpose": "fine-tune", "bytes": NaN}', "bytes"),
    ],
)
def test_non_finite_numbers_are_a_400_naming_the_param(
    server: ServerProcess, project: IssuedKey, path: str, content: str, param: str
) -> None:
    headers = {"Authorization": f"Bearer {project.key}", "Content-Type": "application/json"}

    response = httpx.post(server.base_url + path, content=content, headers=headers)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "not a finite number" in error["message"]
    jobs = httpx.get(server.base_url + "/v1/fine_tuning/jobs", headers=headers).json()
    assert jobs["data"] == []  # nothing was stored


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        (
            "../../etc/passwd",
            "attachment; filename=\"passwd\"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
        ),
        (
            'C:\\tmp\\r\u00e9sum\u00e9 "1".txt',
            'attachment; filename="r_sum_ _1_.txt"; '
            "filename*=UTF-8''C%3A%5Ctmp%5Cr%C3%A9sum%C3%A9%20%221%22.txt",
        ),
        (
            "notes;100%.txt",
            "attachment; filename=\"notes;100_.txt\"; filename*=UTF-8''notes%3B100%25.txt",
        ),
    ],
)
def test_download_names_cannot_carry_a_path(
    server: ServerProcess, project: IssuedKey, filename: str, disposition: str
) -> None:
    """The name goes in through the Uploads API, which stores it exactly as sent (a multipart
    client would escape quotes and drop a Windows path first)."""
    headers = {"Authorization": f"Bearer {project.key}"}
    data = b"some notes\n"
    upload = httpx.post(
        server.base_url + "/v1/uploads",
        headers=headers,
        json={
            "filename": filename,
            "purpose": "user_data",
            "bytes": len(data),
            "mime_type": "text/plain",
        },
    ).json()
    part = httpx.post(
        server.base_url + f"/v1/uploads/{upload['id']}/parts",
        headers=headers,
        files={"data": ("part", data)},
    ).json()
    completed = httpx.post(
        server.base_url + f"/v1/uploads/{upload['id']}/complete",
        headers=headers,
        json={"part_ids": [part["id"]]},
    )
    assert completed.status_code == 200, completed.text

    file_id = completed.json()["file"]["id"]
    response = httpx.get(server.base_url + f"/v1/files/{file_id}/content", headers=headers)

    assert response.status_code == 200
    assert response.headers["content-disposition"] == disposition
    assert response.content == data
