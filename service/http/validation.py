"""Turn pydantic validation errors into OpenAI-style 400 errors that name the ``param``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.errors import InvalidRequestError

JSON_BODY_UNPARSABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON.)"
)

_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "string": "string",
    "str": "string",
    "dict": "object",
    "model": "object",
    "list": "array",
}

_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def param_of(loc: Sequence[int | str]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``messages[0].role``."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _expected_list(expected: str) -> str:
    return "[" + expected.replace(" or ", ", ") + "]"


def describe(error: dict[str, Any]) -> str:
    """One pydantic error as a JSON-schema-style sentence: ``-1 is less than the minimum of 1``."""
    kind: str = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in ("literal_error", "enum"):
        return f"{value!r} is not one of {_expected_list(str(ctx.get('expected', '')))}"
    bounds = {
        "greater_than_equal": ("is less than the minimum of", "ge"),
        "greater_than": ("is less than or equal to the minimum of", "gt"),
        "less_than_equal": ("is greater than the maximum of", "le"),
        "less_than": ("is greater than or equal to the maximum of", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{value} {words} {ctx.get(key)}"
    head, _, tail = kind.partition("_")
    if tail in ("parsing", "type") and head in _TYPE_NAMES:
        return f"{value!r} is not of type '{_TYPE_NAMES[head]}'"
    if kind == "string_too_short":
        return f"{value!r} is too short"
    if kind == "string_too_long":
        return f"{value!r} is too long"
    return str(error.get("msg", "Invalid value"))


def to_invalid_request(errors: Sequence[Any]) -> InvalidRequestError:
    """The first error, worded the way OpenAI words it, with ``param`` set."""
    error = dict(errors[0])
    loc = tuple(error.get("loc", ()))
    param = param_of(loc)
    kind = error["type"]
    if kind == "json_invalid" or (kind == "missing" and param is None):
        return InvalidRequestError(JSON_BODY_UNPARSABLE)
    if kind == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}", param=param)
    return InvalidRequestError(f"{describe(error)} - '{param}'", param=param)
