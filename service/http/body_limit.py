"""ASGI middleware refusing request bodies over ``OPENFT_MAX_REQUEST_BYTES`` with a 413.

File uploads and upload parts stream into the blob store under their own, larger limits and
are left alone. A body without a ``content-length`` is counted as it arrives (and held, at most
the limit, so the route reads it as usual).
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError

STREAMED_UPLOADS = re.compile(r"^/v1/(files|uploads/[^/]+/parts)/?$")


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STREAMED_UPLOADS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(
            f"The request body is larger than the maximum of {self.max_bytes} bytes "
            "(OPENFT_MAX_REQUEST_BYTES). Upload large data with /v1/files or /v1/uploads.",
        )
        response = JSONResponse(error.envelope(), status_code=error.status_code)
        await response(scope, receive, send)
