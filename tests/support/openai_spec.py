"""Validate response bodies against OpenAI's published OpenAPI spec (kept in ../shared).

Known, documented differences between the spec and api.openai.com's real responses are
accepted (see ``KNOWN_DIFFERENCES``); everything else must validate.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO.parent / "shared" / "openai-reference" / "openai-openapi.yaml"


def spec_available() -> bool:
    return SPEC_PATH.is_file()


# A response object's ``user`` (none sent) and ``usage`` (while in progress) are null on
# api.openai.com (recorded: API-FACTS-SURFACES 3.2, 3.3); the spec says string and object.
NULLABLE_IN_REALITY = ("expires_at", "status_details", "first_id", "last_id", "user", "usage")
# A batch's fields for what has not happened (yet) are null on api.openai.com (recorded:
# BatchTests_CreateGetAndCancelBatchProtocol, a validating and a cancelling batch); the spec
# types them as non-null strings and integers.
BATCH_NULLABLE_IN_REALITY = (
    "model", "errors", "output_file_id", "error_file_id", "in_progress_at", "finalizing_at",
    "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
)  # fmt: skip


def _null_in_reality(error: jsonschema.ValidationError) -> bool:
    # The spec types OpenAIFile.expires_at / status_details as non-null strings or integers; the
    # real API sends null. A list with no items has no first_id / last_id to give either.
    return (
        error.validator == "type"
        and error.instance is None
        and bool(error.path)
        and error.path[-1] in (*NULLABLE_IN_REALITY, *BATCH_NULLABLE_IN_REALITY)
    )


def _evals_purpose(error: jsonschema.ValidationError) -> bool:
    # `evals` is accepted on upload but missing from OpenAIFile.purpose's enum.
    return (
        error.validator == "enum"
        and error.instance == "evals"
        and bool(error.path)
        and error.path[-1] == "purpose"
    )


def _empty_job_error(error: jsonschema.ValidationError) -> bool:
    # api.openai.com sends "error": {} for jobs that have not failed; the spec says null.
    return error.instance == {} and bool(error.path) and error.path[-1] == "error"


def _paused_status(error: jsonschema.ValidationError) -> bool:
    # The spec's status enum lacks "paused", yet its own pause example returns it.
    return (
        error.validator == "enum"
        and error.instance == "paused"
        and bool(error.path)
        and error.path[-1] == "status"
    )


def _stored_chat_message(error: jsonschema.ValidationError) -> bool:
    # A stored chat completion's messages list holds the request's messages without `refusal`,
    # user/system/tool ones included, where the spec reuses the assistant message's schema
    # (recorded: API-FACTS-SURFACES 4).
    path = list(error.path)
    in_list = len(path) >= 2 and path[0] == "data" and isinstance(path[1], int)
    no_refusal = (
        len(path) == 2
        and error.validator == "required"
        and error.message == "'refusal' is a required property"
    )
    request_role = (
        len(path) == 3
        and path[2] == "role"
        and error.validator == "enum"
        and error.instance in ("system", "developer", "user", "tool")
    )
    # The stored message says "no tool calls" as null (recorded), the spec as a missing key.
    no_calls = (
        error.validator == "type"
        and error.instance is None
        and path[-2:-1] == ["message"]
        and path[-1] in ("tool_calls", "function_call")
    )
    return no_calls or (in_list and (no_refusal or request_role))


def _multi_grader_map(error: jsonschema.ValidationError) -> bool:
    # OpenAI's guides send a multi grader's `graders` as an object by key (the keys its
    # calculate_output names); the spec types the field as one grader (API-FACTS-SURFACES 1.8).
    instance = error.instance
    return (
        error.validator == "oneOf"
        and isinstance(instance, dict)
        and instance.get("type") == "multi"
        and isinstance(instance.get("graders"), dict)
        and "type" not in instance["graders"]
    )


def _grader_token_usage(error: jsonschema.ValidationError) -> bool:
    # RunGraderResponse types metadata.token_usage as an integer, yet its own example (and the
    # SDK's model graders) give the judge's usage object (API-FACTS-SURFACES 1.9).
    return (
        list(error.path) == ["metadata", "token_usage"]
        and isinstance(error.instance, dict)
        and "prompt_tokens" in error.instance
    )


KNOWN_DIFFERENCES: tuple[Callable[[jsonschema.ValidationError], bool], ...] = (
    _null_in_reality,
    _evals_purpose,
    _empty_job_error,
    _paused_status,
    _stored_chat_message,
    _multi_grader_map,
    _grader_token_usage,
)


@functools.cache
def _spec() -> dict[str, Any]:
    with SPEC_PATH.open() as handle:
        loaded: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    _exclusive_bounds_as_numbers(loaded)
    return loaded


def _exclusive_bounds_as_numbers(node: Any) -> None:
    """The spec says OpenAPI 3.1 (JSON Schema 2020-12) yet writes some bounds in 3.0's style,
    ``minimum: 0`` with ``exclusiveMinimum: true`` (DPO's ``beta``); 2020-12 reads ``true`` as the
    number 1. Rewrite them as meant: ``exclusiveMinimum: 0``."""
    if isinstance(node, dict):
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if node.get(exclusive) is True and bound in node:
                node[exclusive] = node.pop(bound)
            elif node.get(exclusive) is False:
                del node[exclusive]
        for value in node.values():
            _exclusive_bounds_as_numbers(value)
    elif isinstance(node, list):
        for value in node:
            _exclusive_bounds_as_numbers(value)


@functools.cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    routes = []
    for template in _spec()["paths"]:
        parts = re.split(r"(\{[^/]+?\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        routes.append((re.compile(pattern + "$"), template))
    # Literal segments beat parameters: /files/{id}/content must not match /files/{id}.
    routes.sort(key=lambda route: route[1].count("{"))
    return routes


def operation_for(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    path = path.removeprefix("/v1")
    for pattern, template in _routes():
        if pattern.match(path):
            operation = _spec()["paths"][template].get(method.lower())
            if operation is not None:
                return template, operation
    return None


# Bodies api.openai.com sends where the spec declares none (recorded: API-FACTS-SURFACES 3.4).
REAL_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("delete", "/responses/{response_id}"): {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response.deleted"},
            "deleted": {"const": True},
        },
    },
}


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The JSON schema a response must meet, or None where the spec declares none."""
    if status >= 400:
        return {"$ref": "#/components/schemas/ErrorResponse"}
    found = operation_for(method, path)
    if found is None:
        return None
    template, operation = found
    if (method.lower(), template) in REAL_BODIES:
        return REAL_BODIES[method.lower(), template]
    response = operation.get("responses", {}).get(str(status))
    content = (response or {}).get("content", {}).get("application/json")
    return None if content is None else content.get("schema")


@functools.cache
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = {**json.loads(schema_json), "components": _spec()["components"]}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """Schema violations of one response body, minus the known real-world differences."""
    schema = response_schema(method, path, status)
    if schema is None:
        return [f"{method} {path} -> {status}: OpenAI's spec declares no JSON body for this"]
    validator = _validator(json.dumps(schema, sort_keys=True))
    found = []
    for error in validator.iter_errors(body):
        if any(known(error) for known in KNOWN_DIFFERENCES):
            continue
        found.append(
            f"{method} {path} -> {status}: {'/'.join(map(str, error.path))}: {error.message}"
        )
    return found


@dataclass
class ConformanceRecorder:
    """Collects every JSON body a test receives; ``check`` validates them all."""

    bodies: list[tuple[str, str, int, Any]] = field(default_factory=list)

    def record(self, method: str, path: str, status: int, body: Any) -> None:
        if path.startswith("/v1/"):  # OpenFT's own endpoints (/healthz ...) are not OpenAI's
            self.bodies.append((method.upper(), path, status, body))

    def check(self) -> list[str]:
        found: list[str] = []
        for method, path, status, body in self.bodies:
            found.extend(problems(method, path, status, body))
        return found


@functools.cache
def _stream_event_schemas() -> dict[str, str]:
    """Each Responses stream event type's schema, by the type (``response.completed`` ...)."""
    components = _spec()["components"]["schemas"]
    found = {}
    for option in components["ResponseStreamEvent"]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[1]
        kind = components[name].get("properties", {}).get("type", {}).get("enum", [None])[0]
        if kind is not None:
            found[kind] = name
    return found


def stream_event_problems(event: dict[str, Any]) -> list[str]:
    """Schema violations of one Responses stream event, against its type's schema."""
    name = _stream_event_schemas().get(event.get("type", ""))
    if name is None:
        return [f"event {event.get('type')!r}: not one of OpenAI's Responses stream events"]
    validator = _validator(json.dumps({"$ref": f"#/components/schemas/{name}"}))
    return [
        f"event {event['type']}: {'/'.join(map(str, error.path))}: {error.message[:300]}"
        for error in validator.iter_errors(event)
        if not any(known(error) for known in KNOWN_DIFFERENCES)
    ]
