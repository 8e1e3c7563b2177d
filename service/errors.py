"""The one error hierarchy of the API. Each error knows its HTTP status and OpenAI envelope fields.

Services raise these; ``service.http.error_handlers`` renders them as
``{"error": {"message", "type", "param", "code"}}``. Nothing below the routers raises
``HTTPException``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpenFTError(Exception):
    """Base of every error a client may see."""

    status_code: int = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(OpenFTError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(OpenFTError):
    status_code = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(OpenFTError):
    status_code = 403
    error_type = "invalid_request_error"


class NotFoundError(OpenFTError):
    status_code = 404
    error_type = "invalid_request_error"


class MethodNotAllowedError(OpenFTError):
    status_code = 405
    error_type = "invalid_request_error"


class PayloadTooLargeError(OpenFTError):
    status_code = 413
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(OpenFTError):
    status_code = 415
    error_type = "invalid_request_error"


class ServiceUnavailableError(OpenFTError):
    status_code = 503
    error_type = "server_error"


class StorageUnavailableError(ServiceUnavailableError):
    """The blob store cannot take or give bytes now (out of space, unreachable): nothing was
    kept of the request's blob, and the same request may succeed later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"retry-after": "5"})


class InternalServerError(OpenFTError):
    status_code = 500
    error_type = "server_error"

    def __init__(self, request_id: str | None = None) -> None:
        reference = f" (Please include the request ID {request_id} when reporting it.)"
        super().__init__(
            "The server had an error while processing your request. Sorry about that! "
            "You can retry your request, or tell your OpenFT operator if the error persists."
            + (reference if request_id else "")
        )


def no_such_object(kind: str, object_id: str, *, param: str = "id") -> NotFoundError:
    """OpenAI's wording for a missing object, e.g. ``No such File object: file-abc``."""
    return NotFoundError(f"No such {kind} object: {object_id}", param=param)
