"""Schemathesis fuzzes every operation of ``openapi/openapi.json`` against a running ``openft
serve``: no 5xx, and every response (errors included) matches the schema we publish.

All of schemathesis's checks run (status codes, bodies, content types, headers, ``Allow`` on
405s, schema-valid data accepted, invalid data refused), with two documented allowances:

- ``--no-vllm``: completions and evaluations answer ``503`` (model server down) in OpenAI's
  error envelope with ``retry-after``; any other 5xx still fails.
- Schema-valid bodies that name something that must exist or depend on another field (a base
  model, a file id, the ``mime_type`` a purpose needs) may be refused with ``400``, but only with
  ``param`` naming that field, as api.openai.com does; so may an ``Idempotency-Key`` an earlier
  request used (``idempotency_key_reused``), and text holding NUL (0x00), which PostgreSQL cannot
  store (``test_fuzz_regressions.py`` pins that answer).

Examples are bounded and derandomized (the same cases every run), so this is a regression test.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.auth.service import AccessService
from tests.support.server import ServerProcess

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
MAX_EXAMPLES = 60

schema = schemathesis.openapi.from_path(OPENAPI)
# Unknown query parameters are ignored, as api.openai.com ignores them (and the jobs list reads
# ``metadata[key]`` filters from them), so they are not "invalid data" to be refused.
schema.config.generation.update(allow_extra_parameters=False)

# Needs a vLLM; the API-only server (--no-vllm) has none.
MODEL_SERVER_OPERATIONS = {
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/openft/evals",
    "POST /v1/responses",
    "POST /v1/responses/input_tokens",
}

# Items, parts, tools and formats OpenFT cannot honour are refused naming them (README: the
# Responses API); the previous response must exist; the model must be servable.
RESPONSE_FIELDS_REFUSED = {
    "model",
    "input",
    "previous_response_id",
    "tools",
    "tool_choice",
    "text",
    "background",
    "truncation",
    "reasoning",
    "top_logprobs",
    "conversation",
    "prompt",
    "metadata",
}
# Fields whose schema-valid values can still be refused (400, ``param`` set), by operation.
DATA_DEPENDENT_PARAMS = {
    "POST /v1/fine_tuning/jobs": {
        "model",  # a configured base model, or one of the project's ft: models
        "training_file",  # an existing file of the project, with valid examples
        "validation_file",
        "suffix",  # ^[A-Za-z0-9_-]{1,64}$ is checked in OpenAI's words
        "hyperparameters",  # values are "auto" or in range; checked by the service
        "method",
        "integrations",
        "metadata",
    },
    "POST /v1/uploads": {"mime_type"},  # fine-tune and batch uploads must be JSONL
    "POST /v1/uploads/{upload_id}/complete": {"part_ids", "md5"},
    "POST /v1/files": {"file"},  # a fine-tune file must be UTF-8 JSONL
    # An ft: model; a file with chat examples; a grader this server can run.
    "POST /v1/openft/evals": {"model", "file", "grader"},
    # A grader's fields are checked by the graders package (the schema says "an object").
    "POST /v1/fine_tuning/alpha/graders/validate": {"grader"},
    "POST /v1/fine_tuning/alpha/graders/run": {"grader"},
    "POST /v1/responses": RESPONSE_FIELDS_REFUSED,
    "POST /v1/responses/input_tokens": RESPONSE_FIELDS_REFUSED,
    "GET /v1/responses/{response_id}": {"stream"},  # only background responses stream back
    # An existing file of purpose batch; an endpoint OpenFT batches (the schema says "a string").
    "POST /v1/batches": {"input_file_id", "endpoint", "metadata"},
    "POST /v1/batches/{batch_id}/cancel": {"batch_id"},  # a finished batch cannot be cancelled
    # Some stored completion or response must match the filters (the first given is named).
    "POST /v1/openft/distillations": {
        "model",
        "metadata",
        "created_after",
        "created_before",
        "sources",
    },
}


# 400s that depend on state or storage, not on the request's shape.
STATE_DEPENDENT_CODES = {"idempotency_key_reused"}
NUL_MESSAGE = "Text in a request cannot contain NUL (0x00) characters."


@pytest.fixture(scope="session")
def fuzz_key(access: AccessService) -> str:
    """One project for all fuzzed requests, so the objects they create stay out of the others."""
    return access.issue_key("fuzz").key


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_schema(
    case: schemathesis.Case, server: ServerProcess, fuzz_key: str
) -> None:
    response = case.call(base_url=server.base_url, headers={"Authorization": f"Bearer {fuzz_key}"})
    excluded = []
    label = f"{case.method.upper()} {case.path}"
    if label in MODEL_SERVER_OPERATIONS and response.status_code == 503:
        assert "retry-after" in response.headers, response.text
        excluded.append(not_a_server_error)
    if response.status_code == 400 and _refused_for_state(response):
        excluded.append(positive_data_acceptance)
    elif label in DATA_DEPENDENT_PARAMS and response.status_code == 400:
        param = _error_param(response)
        assert param in DATA_DEPENDENT_PARAMS[label] or _is_negative(case), response.text
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


def _error(response: requests.Response) -> dict[str, Any]:
    try:
        error = response.json()["error"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _refused_for_state(response: requests.Response) -> bool:
    error = _error(response)
    return error.get("code") in STATE_DEPENDENT_CODES or error.get("message") == NUL_MESSAGE


def _error_param(response: requests.Response) -> str:
    param = _error(response).get("param") or ""
    return str(param).split(".")[0].split("[")[0]


def _is_negative(case: schemathesis.Case) -> bool:
    return case.meta is not None and not case.meta.generation.mode.is_positive


# Every operation that reads a JSON body, found in the schema, so one added later is fuzzed too.
JSON_BODY_OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, operations in schema.raw_schema["paths"].items()
    for method, operation in operations.items()
    if "application/json" in operation.get("requestBody", {}).get("content", {})
)
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 400]
PLACEHOLDER = "\x00non-finite\x00"


@schema.include(name=JSON_BODY_OPERATIONS).parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_non_finite_numbers_are_refused_wherever_they_are(
    case: schemathesis.Case, data: st.DataObject, server: ServerProcess, fuzz_key: str
) -> None:
    """A generated body with one number, anywhere in it (replacing a number or added to an
    object or array), made non-finite: a 400 whose ``param`` says where, never a 5xx or a 2xx."""
    body, where = _with_placeholder(case.body, data)
    literal = data.draw(st.sampled_from(NON_FINITE), label="literal")
    text = json.dumps(body).replace(json.dumps(PLACEHOLDER), literal)

    response = requests.request(
        case.method,
        server.base_url + case.formatted_path,
        params=case.query,
        data=text.encode(),
        headers={"Authorization": f"Bearer {fuzz_key}", "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 400, (text, response.text)
    error = _error(response)
    assert error.get("param") == _param(where), (text, error)
    assert "not a finite number" in error.get("message", ""), error


def _places(
    value: Any, path: tuple[int | str, ...] = ()
) -> list[tuple[str, tuple[int | str, ...]]]:
    """Where a number can go: over each number, or into each object and array."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [("replace", path)]
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else None
    )
    if items is None:
        return []
    return [("add", path)] + [place for key, item in items for place in _places(item, (*path, key))]


def _with_placeholder(body: Any, data: st.DataObject) -> tuple[Any, tuple[int | str, ...]]:
    """The body with one placeholder put in a place drawn from all its numbers and containers."""
    places = _places(body)
    if not places:
        return PLACEHOLDER, ()
    how, path = data.draw(st.sampled_from(places), label="place")
    if how == "replace" and not path:  # the body is itself a number
        return PLACEHOLDER, ()
    body = copy.deepcopy(body)
    parent: Any = body
    for part in path[:-1] if how == "replace" else path:
        parent = parent[part]
    if how == "replace":
        parent[path[-1]] = PLACEHOLDER
        return body, path
    if isinstance(parent, list):
        parent.append(PLACEHOLDER)
        return body, (*path, len(parent) - 1)
    key = data.draw(st.sampled_from(["n", "temperature", "x-number"]), label="key")
    parent[key] = PLACEHOLDER
    return body, (*path, key)


def _param(path: tuple[int | str, ...]) -> str | None:
    """``("messages", 0, "n")`` -> ``messages[0].n``, the way OpenAI names a ``param``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def _takes_a_file_name(operation: dict[str, Any]) -> bool:
    content = operation.get("requestBody", {}).get("content", {})
    multipart = content.get("multipart/form-data", {}).get("schema", {})
    json_body = content.get("application/json", {}).get("schema", {})
    return any(
        field.get("format") == "binary" for field in _properties(multipart).values()
    ) or "filename" in _properties(json_body)


def _properties(body_schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in body_schema:
        name = body_schema["$ref"].rsplit("/", 1)[-1]
        body_schema = schema.raw_schema["components"]["schemas"][name]
    return dict(body_schema.get("properties", {}))


FILE_NAME_OPERATIONS = {
    f"{method.upper()} {path}"
    for path, operations in schema.raw_schema["paths"].items()
    for method, operation in operations.items()
    if _takes_a_file_name(operation)
}
HOSTILE_NAMES = st.one_of(
    st.sampled_from(
        [
            "../../etc/passwd",
            "..\\..\\windows\\win.ini",
            '"quoted"; filename=evil.sh',
            "a\r\nSet-Cookie: x=1",
            "%2e%2e%2fsecret",
            "\u202etxt.exe",
            "..",
        ]
    ),
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=40
    ),
)
ATTR_CHARS = re.compile(r"(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})*")
DISPOSITION = re.compile(r"attachment; filename=\"([^\"\\]*)\"; filename\*=UTF-8''(\S*)")


Stored = tuple[requests.Response, dict[str, Any] | None]  # the last answer; the file if stored


def _stored_via_files(server: ServerProcess, headers: dict[str, str], name: str) -> Stored:
    response = requests.post(
        server.base_url + "/v1/files",
        headers=headers,
        data={"purpose": "user_data"},
        files={"file": (name, b"notes\n", "text/plain")},
        timeout=30,
    )
    return response, response.json() if response.status_code == 200 else None


def _stored_via_uploads(server: ServerProcess, headers: dict[str, str], name: str) -> Stored:
    body = {"filename": name, "purpose": "user_data", "bytes": 6, "mime_type": "text/plain"}
    upload = requests.post(server.base_url + "/v1/uploads", headers=headers, json=body, timeout=30)
    if upload.status_code != 200:
        return upload, None
    upload_id = upload.json()["id"]
    part = requests.post(
        server.base_url + f"/v1/uploads/{upload_id}/parts",
        headers=headers,
        files={"data": ("part", b"notes\n")},
        timeout=30,
    ).json()
    completed = requests.post(
        server.base_url + f"/v1/uploads/{upload_id}/complete",
        headers=headers,
        json={"part_ids": [part["id"]]},
        timeout=30,
    )
    return completed, completed.json()["file"] if completed.status_code == 200 else None


# How each operation that takes a file name stores one; the parts' names are not kept.
STORE_NAMED_FILE = {
    "POST /v1/files": _stored_via_files,
    "POST /v1/uploads": _stored_via_uploads,
    "POST /v1/uploads/{upload_id}/parts": None,
}


def test_every_operation_that_takes_a_file_name_is_fuzzed() -> None:
    assert set(STORE_NAMED_FILE) == FILE_NAME_OPERATIONS


@pytest.mark.parametrize(
    "operation", sorted(name for name, store in STORE_NAMED_FILE.items() if store)
)
@given(name=HOSTILE_NAMES)
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_a_downloaded_file_name_cannot_carry_a_path(
    operation: str, name: str, server: ServerProcess, fuzz_key: str
) -> None:
    """Whatever name a file was stored under, ``Content-Disposition`` carries it RFC 8187-encoded
    (``filename*`` decodes back to it exactly) and an ASCII fallback with no path in it."""
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    store = STORE_NAMED_FILE[operation]
    assert store is not None
    answer, file = store(server, headers, name)
    if file is None:  # a refused name is refused cleanly
        assert answer.status_code == 400, answer.text
        assert _error(answer).get("type") == "invalid_request_error", answer.text
        return

    response = requests.get(
        server.base_url + f"/v1/files/{file['id']}/content", headers=headers, timeout=30
    )

    assert response.status_code == 200
    match = DISPOSITION.fullmatch(response.headers["content-disposition"])
    assert match, response.headers["content-disposition"]
    fallback, encoded = match.groups()
    assert fallback and all(" " <= c <= "~" for c in fallback) and "/" not in fallback, fallback
    assert fallback.strip(" .") == fallback
    assert ATTR_CHARS.fullmatch(encoded), encoded
    assert unquote(encoded, errors="strict") == file["filename"]
