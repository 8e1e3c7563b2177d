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
