"""Error bodies as curl sees them: status, OpenAI's envelope, ``param`` and ``code``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from service.auth.service import AccessService, IssuedKey
from tests.e2e.conftest import CurlResult

Curl = Callable[..., CurlResult]

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). An operator can create one with "
    "`openft keys create --project <slug>`."
)


def error_of(result: CurlResult) -> dict[str, object]:
    body = result.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = body["error"]
    return error


def test_missing_key(curl: Curl) -> None:
    result = curl("GET", "/v1/files")

    assert result.status == 401
    assert error_of(result) == {
        "message": NO_KEY,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_wrong_key(curl: Curl) -> None:
    result = curl("GET", "/v1/files", key="sk-openft-not-a-real-key-at-all")

    assert result.status == 401
    error = error_of(result)
    assert error["code"] == "invalid_api_key" and error["param"] is None
    assert str(error["message"]).startswith(
        "Incorrect API key provided: sk-openf*******************-all."
    )


def test_revoked_key(curl: Curl, project: IssuedKey, access: AccessService) -> None:
    assert curl("GET", "/v1/files", key=project.key).status == 200
    access.revoke_key(project.key_id)

    result = curl("GET", "/v1/files", key=project.key)

    assert result.status == 401 and error_of(result)["code"] == "invalid_api_key"


def test_openai_project_header_must_match(curl: Curl, project: IssuedKey) -> None:
    for good in (project.project_id, project.project_slug):
        assert (
            curl("GET", "/v1/files", "-H", f"OpenAI-Project: {good}", key=project.key).status == 200
        )

    result = curl("GET", "/v1/files", "-H", "OpenAI-Project: proj_someoneelse", key=project.key)

    assert result.status == 401 and error_of(result)["code"] == "mismatched_project"


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/content")])
def test_unknown_file(curl: Curl, project: IssuedKey, method: str, suffix: str) -> None:
    result = curl(method, f"/v1/files/file-doesnotexist{suffix}", key=project.key)

    assert result.status == 404
    assert error_of(result) == {
        "message": "No such File object: file-doesnotexist",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }


def test_bad_purpose(curl: Curl, project: IssuedKey, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")

    result = curl(
        "POST",
        "/v1/files",
        "-F",
        "purpose=world_domination",
        "-F",
        f"file=@{tmp_path / 'a.txt'}",
        key=project.key,
    )

    assert result.status == 400
    assert error_of(result) == {
        "message": "'world_domination' is not one of ['fine-tune', 'assistants', 'batch', "
        "'user_data', 'vision', 'evals'] - 'purpose'",
        "type": "invalid_request_error",
        "param": "purpose",
        "code": None,
    }


def test_missing_file_field(curl: Curl, project: IssuedKey) -> None:
    result = curl("POST", "/v1/files", "-F", "purpose=fine-tune", key=project.key)

    assert result.status == 400
    assert error_of(result) == {
        "message": "Missing required parameter: 'file'.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "missing_required_parameter",
    }


def test_missing_purpose(curl: Curl, project: IssuedKey, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")

    result = curl("POST", "/v1/files", "-F", f"file=@{tmp_path / 'a.txt'}", key=project.key)

    assert result.status == 400 and error_of(result)["param"] == "purpose"


def test_not_multipart(curl: Curl, project: IssuedKey) -> None:
    result = curl(
        "POST", "/v1/files", "-H", "Content-Type: application/json", "-d", "{}", key=project.key
    )

    assert result.status == 415 and error_of(result)["param"] == "file"


def test_oversize_file(curl: Curl, project: IssuedKey, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"a": 1}\n' * 400_000)  # 3.6 MB against the test server's 2 MiB limit

    result = curl(
        "POST", "/v1/files", "-F", "purpose=fine-tune", "-F", f"file=@{big}", key=project.key
    )

    assert result.status == 413
    error = error_of(result)
    assert error["code"] == "file_too_large" and error["param"] == "file"
    assert "maximum size is 2097152 bytes" in str(error["message"])
    assert curl("GET", "/v1/files", key=project.key).json()["data"] == []


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b'{"a": 1}\n{"b": "\xff\xfe"}\n', 2, "the line is not valid UTF-8"),
        (b'{"a": 1}\n\n{"b": 2}\nthis is not json\n', 4, "not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', 2, "expected a JSON object, got a JSON array"),
    ],
)
def test_fine_tune_file_structure(
    curl: Curl, project: IssuedKey, tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)

    result = curl(
        "POST", "/v1/files", "-F", "purpose=fine-tune", "-F", f"file=@{path}", key=project.key
    )

    assert result.status == 400
    error = error_of(result)
    assert (error["param"], error["code"]) == ("file", "invalid_file_format")
    assert f"line {line}: {problem}" in str(error["message"])
    assert curl("GET", "/v1/files", key=project.key).json()["data"] == []


def test_same_bytes_are_fine_for_other_purposes(
    curl: Curl, project: IssuedKey, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not json\n\xff\n")

    result = curl(
        "POST", "/v1/files", "-F", "purpose=user_data", "-F", f"file=@{path}", key=project.key
    )

    assert result.status == 200 and result.json()["bytes"] == 11


def test_bad_query_parameters(curl: Curl, project: IssuedKey) -> None:
    too_small = curl("GET", "/v1/files?limit=0", key=project.key)
    bad_order = curl("GET", "/v1/files?order=sideways", key=project.key)
    bad_after = curl("GET", "/v1/files?after=file-nope", key=project.key)

    assert too_small.status == 400
    assert error_of(too_small)["message"] == "0 is less than the minimum of 1 - 'limit'"
    assert error_of(too_small)["param"] == "limit"
    assert bad_order.status == 400
    assert error_of(bad_order)["message"] == "'sideways' is not one of ['asc', 'desc'] - 'order'"
    assert bad_after.status == 404 and error_of(bad_after)["param"] == "after"


def test_unknown_route_and_method(curl: Curl, project: IssuedKey) -> None:
    unknown = curl("GET", "/v1/no-such-thing", key=project.key)
    wrong_method = curl("PUT", "/v1/files", key=project.key)

    assert unknown.status == 404
    assert error_of(unknown)["message"] == "Invalid URL (GET /v1/no-such-thing)"
    assert wrong_method.status == 405 and error_of(wrong_method)["type"] == "invalid_request_error"


def test_every_response_has_a_request_id(curl: Curl, project: IssuedKey) -> None:
    for result in (
        curl("GET", "/v1/files", key=project.key),
        curl("GET", "/v1/files"),
        curl("GET", "/v1/files/file-x", key=project.key),
        curl("GET", "/healthz"),
    ):
        assert re.fullmatch(r"req_[0-9a-f]{32}", result.headers["x-request-id"])


def test_health_needs_no_key(curl: Curl) -> None:
    assert curl("GET", "/healthz").status == 200
    assert curl("GET", "/readyz").status == 200


def test_metrics_are_off_until_an_operator_token_is_set(curl: Curl, project: IssuedKey) -> None:
    result = curl("GET", "/metrics", key=project.key)

    assert result.status == 403
    assert "OPENFT_METRICS_TOKEN" in str(error_of(result)["message"])
