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

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
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
    "POST /v1/openft/evals": {"model", "file"},  # an ft: model; a file with chat examples
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
