"""Relays vLLM's server-sent events to the client as they come, untouched except for the usage-only
chunk the client did not ask for (the gateway always asks vLLM for it, to count tokens)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson


class SSERelay:
    """Passes SSE events through untouched, except the usage-only chunk nobody asked for."""

    def __init__(self, response: httpx.Response, keep_usage_chunk: bool) -> None:
        self.response = response
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.first_chunk_at: float | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        async for data in self.response.aiter_bytes():
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if self._keep(event):
                    if self.first_chunk_at is None:
                        self.first_chunk_at = time.perf_counter()
                    yield event + b"\n\n"
        if buffer.strip():
            yield buffer

    def _keep(self, event: bytes) -> bool:
        payload = event.removeprefix(b"data: ").strip()
        if not payload.startswith(b"{") or b'"usage"' not in payload:
            return True
        chunk = orjson.loads(payload)
        if chunk.get("usage") and not chunk.get("choices"):
            self.usage = chunk["usage"]
            return self.keep_usage_chunk
        return True
