"""The conformance checker itself: it must accept real shapes and catch wrong ones."""

from __future__ import annotations

import pytest

from tests.support import openai_spec
from tests.support.ci import require

FILE = {
    "object": "file",
    "id": "file-abc",
    "purpose": "fine-tune",
    "filename": "a.jsonl",
    "bytes": 1,
    "created_at": 1,
    "expires_at": None,
    "status": "processed",
    "status_details": None,
}


@pytest.fixture(autouse=True)
def _spec() -> None:
    require(
        openai_spec.spec_available(),
        f"OpenAI's published spec at {openai_spec.SPEC_PATH} (response bodies cannot be validated)",
    )


def test_real_shapes_pass_including_documented_differences() -> None:
    listing = {
        "object": "list",
        "data": [FILE],
        "first_id": "file-abc",
        "last_id": "file-abc",
        "has_more": False,
    }

    assert openai_spec.problems("GET", "/v1/files/file-abc", 200, FILE) == []
    assert openai_spec.problems("GET", "/v1/files", 200, listing) == []
    assert openai_spec.problems("POST", "/v1/files", 200, {**FILE, "purpose": "evals"}) == []


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/v1/files/file-abc", 200, {**FILE, "object": "files"}),
        ("GET", "/v1/files/file-abc", 200, {k: v for k, v in FILE.items() if k != "bytes"}),
        ("GET", "/v1/files", 200, {"object": "list", "data": [FILE]}),
        (
            "DELETE",
            "/v1/files/file-abc",
            200,
            {"id": "file-abc", "deleted": "yes", "object": "file"},
        ),
        ("GET", "/v1/files", 401, {"error": {"message": "m", "type": "t", "param": None}}),
        ("GET", "/v1/no-such-route", 200, {}),
    ],
)
def test_wrong_shapes_are_caught(method: str, path: str, status: int, body: object) -> None:
    assert openai_spec.problems(method, path, status, body) != []


def test_exclusive_bounds_written_in_openapi_3_0_style_mean_what_they_say() -> None:
    schema = '{"$ref": "#/components/schemas/FineTuneDPOHyperparameters"}'
    validator = openai_spec._validator(schema)

    assert list(validator.iter_errors({"beta": 0.1})) == []
    assert list(validator.iter_errors({"beta": "auto"})) == []
    assert list(validator.iter_errors({"beta": 0})) != []
    assert list(validator.iter_errors({"beta": 2.5})) != []
