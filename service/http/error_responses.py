"""OpenAI's error envelope as OpenAPI documents it: every route's 4XX and 5XX answers.

``service.http.error_handlers`` renders every error, request validation included, in this shape
and with OpenAI's status codes (400, never FastAPI's 422), so the routers document these
ranges instead of FastAPI's default ``422 HTTPValidationError``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "OpenAI's error envelope"},
    "5XX": {"model": ErrorResponse, "description": "OpenAI's error envelope"},
}

# Every /v1 route may answer a rate limit or cap (service.limits) with OpenAI's 429.
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "A rate limit or cap was reached; `retry-after` says when to try again.",
        "model": ErrorResponse,
        "headers": {
            "retry-after": {"schema": {"type": "integer", "minimum": 1}},
            "x-ratelimit-limit-requests": {"schema": {"type": "string"}},
            "x-ratelimit-remaining-requests": {"schema": {"type": "string"}},
            "x-ratelimit-reset-requests": {"schema": {"type": "string"}},
            "x-ratelimit-limit-tokens": {"schema": {"type": "string"}},
            "x-ratelimit-remaining-tokens": {"schema": {"type": "string"}},
            "x-ratelimit-reset-tokens": {"schema": {"type": "string"}},
        },
    }
}
