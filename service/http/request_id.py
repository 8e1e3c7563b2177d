"""ASGI middleware giving every response an ``x-request-id`` and ``openai-processing-ms``."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ids import new_request_id
from service.logs import log_context

REQUEST_ID_HEADER = "x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        # Starlette's request.state reads scope["state"]; the 500 handler takes the id from there.
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"openai-processing-ms", str(elapsed_ms).encode()))
                # x-ratelimit-* of a rate-limited key, set by the authentication dependency
                # (a 429 carries its own).
                present = {name.lower() for name, _ in headers}
                for name, value in state.get("rate_limit_headers", {}).items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)
