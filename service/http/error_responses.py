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
