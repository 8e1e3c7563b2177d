"""Render every error, ours, FastAPI's and unexpected ones, in OpenAI's error envelope."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from service.errors import (
    InternalServerError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    OpenFTError,
)
from service.http.request_id import REQUEST_ID_HEADER
from service.http.validation import to_invalid_request

log = logging.getLogger(__name__)

NUL_REFUSED = "cannot contain NUL (0x00)"  # psycopg's words
NUL_MESSAGE = "Text in a request cannot contain NUL (0x00) characters."


def render(error: OpenFTError, request: Request | None = None) -> JSONResponse:
    headers = dict(error.headers)
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(error.envelope(), status_code=error.status_code, headers=headers)


async def _openft_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenFTError)
    return render(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return render(to_invalid_request(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    route = f"{request.method} {request.url.path}"
    error: OpenFTError
    if exc.status_code == 404:
        error = NotFoundError(f"Invalid URL ({route})")
    elif exc.status_code == 405:
        allow = {"allow": ", ".join(_allowed_methods(request))}
        error = MethodNotAllowedError(f"Invalid method for URL ({route})", headers=allow)
    elif exc.status_code < 500:
        error = InvalidRequestError(str(exc.detail), status_code=exc.status_code)
    else:
        error = InternalServerError()
    return render(error)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, for the ``Allow`` header RFC 9110 requires
    on a 405 (Starlette's names only the first matching route's, e.g. GET or DELETE). A path
    that is a route of its own (``/v1/responses/input_tokens``) is that resource, not an id for
    the routes with a parameter there (``/v1/responses/{response_id}``)."""
    matching = [
        route
        for route in request.app.router.routes
        if isinstance(route, Route)
        and route.methods
        and route.matches(request.scope)[0] != Match.NONE
    ]
    literal = [route for route in matching if "{" not in route.path]
    return sorted({method for route in literal or matching for method in route.methods or ()})


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refuses text holding NUL (0x00), wherever a client put it (an id in the path,
    a query parameter, a name in a body): that is the client's mistake, not a server error."""
    if NUL_REFUSED in str(getattr(exc, "orig", exc)):
        return render(InvalidRequestError(NUL_MESSAGE), request)
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unhandled error in %s %s [%s]", request.method, request.url.path, request_id, exc_info=exc
    )
    return render(InternalServerError(request_id), request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenFTError, _openft_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa_exc.DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected_error)
