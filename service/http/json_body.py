"""How the API reads a JSON request body: one parser for every route, which refuses non-finite
numbers (``NaN``, ``Infinity``, ``-Infinity``, literals beyond a double's range) with a 400 that
names the ``param``, instead of letting them reach a field, the database or vLLM.

Python's ``json`` accepts all of them (``1e999`` becomes ``inf``); RFC 8259 allows none. orjson is
strict and fast, so a body it parses is finite by construction; only when it refuses one does the
standard library read it again, with hooks that mark non-finite values, to say where the first one
is. A body that is not JSON at all stays FastAPI's to refuse, in its words.
"""

from __future__ import annotations

import contextlib
import email.message
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from service.errors import InvalidRequestError
from service.http.validation import param_of


class _NonFinite:
    """Stands where the standard library would have put ``nan``, ``inf`` or an overflowing int."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _constant(literal: str) -> _NonFinite:
    return _NonFinite(literal)


def _float(literal: str) -> float | _NonFinite:
    value = float(literal)
    return value if math.isfinite(value) else _NonFinite(literal)


def _int(literal: str) -> int | _NonFinite:
    try:
        value = int(literal)
        float(value)  # an integer no double can hold is as unusable as Infinity
    except (ValueError, OverflowError):  # ValueError: beyond Python's 4300-digit limit
        return _NonFinite(literal if len(literal) <= 20 else literal[:17] + "...")
    return value


def _first_non_finite(
    value: Any, path: tuple[int | str, ...] = ()
) -> tuple[_NonFinite, tuple[int | str, ...]] | None:
    """The first marked value in document order, with where it is."""
    if isinstance(value, _NonFinite):
        return value, path
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _first_non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def non_finite_error(literal: str, param: str | None) -> InvalidRequestError:
    where = f" - '{param}'" if param else ""
    return InvalidRequestError(
        f"{literal} is not a finite number{where}. Numbers in a request must be finite: NaN, "
        "Infinity and values beyond ±1.8e308 are not accepted.",
        param=param,
    )


def parse(body: bytes) -> Any:
    """The body's JSON value. Raises ``InvalidRequestError`` (400, ``param`` set) for a
    non-finite number and ``json.JSONDecodeError`` for text that is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # not strict JSON: find out whether a number is why, or let the stdlib decide
    value = json.loads(body, parse_constant=_constant, parse_float=_float, parse_int=_int)
    found = _first_non_finite(value)
    if found is not None:
        marked, path = found
        raise non_finite_error(marked.literal, param_of(path))
    return value  # e.g. a lone surrogate in a string: the stdlib accepts it, as before


def _is_json(content_type: str | None) -> bool:
    """FastAPI's own test for a JSON body (``application/json`` or ``application/*+json``)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JSONRequest(Request):
    """A request whose ``json()`` is :func:`parse` (cached, as Starlette caches its own)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
        return self._json


class OpenAIRoute(APIRoute):
    """Every route of the API: its JSON body is read by :func:`parse` before FastAPI validates
    it, so the number rule holds for every operation, the ones added later included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_json_then_handle(request: Request) -> Response:
            request = JSONRequest(request.scope, request.receive)
            if _is_json(request.headers.get("content-type")) and await request.body():
                with contextlib.suppress(ValueError, RecursionError):
                    await request.json()  # not JSON: FastAPI refuses it below, in its words
            return await handler(request)

        return read_json_then_handle


def api_router(**options: Any) -> APIRouter:
    """An ``APIRouter`` whose routes are :class:`OpenAIRoute`s; every router of the API is one."""
    return APIRouter(route_class=OpenAIRoute, **options)
