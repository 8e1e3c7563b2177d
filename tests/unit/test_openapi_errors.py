"""The schema documents the errors the API really sends, and 405s say what is allowed.

Regressions found by the API fuzz test (tests/e2e/test_fuzz_api.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    found: dict[str, Any] = app.openapi()
    return found


def test_every_api_operation_documents_the_error_envelope_not_422(document: dict[str, Any]) -> None:
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}"
            for status in ("4XX", "5XX"):
                assert responses[status]["content"]["application/json"]["schema"] == envelope


def test_upload_bodies_state_the_rules_the_service_checks(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    create = schemas["CreateUploadRequest"]["properties"]
    assert "fine-tune" in create["purpose"]["enum"]
    assert create["bytes"]["maximum"] == 8 * 1024**3
    expires = schemas["ExpiresAfter"]["properties"]
    assert expires["anchor"]["enum"] == ["created_at"]
    assert (expires["seconds"]["minimum"], expires["seconds"]["maximum"]) == (3600, 2592000)
    assert schemas["CompleteUploadRequest"]["properties"]["part_ids"]["minItems"] == 1
    part = document["paths"]["/v1/uploads/{upload_id}/parts"]["post"]["requestBody"]
    assert part["content"]["multipart/form-data"]["schema"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/files", "GET, POST"),
        ("PATCH", "/v1/files/file-abc", "DELETE, GET"),
        ("TRACE", "/v1/models/ft:tiny-chat:acme::AbCd1234", "DELETE, GET"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-abc/cancel", "POST"),
    ],
)
def test_a_405_lists_every_method_of_the_path(
    tmp_path: Path, method: str, path: str, allowed: str
) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path)))

    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["type"] == "invalid_request_error"
