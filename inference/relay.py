"""Relays vLLM's server-sent events to the client as they come, byte for byte, except the
usage-only chunk the client did not ask for (the gateway always asks vLLM for it, to count
tokens): what arrives is passed on in the reads it arrived in, each cut after its last complete
event, and only a read that mentions ``usage`` is looked into."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from inference.vllm_client import RawStream
from service import sse
from service.sse import EVENT_END, USAGE


class SSERelay:
    """Passes SSE bytes through untouched, except the usage-only chunk nobody asked for."""

    def __init__(self, response: RawStream, keep_usage_chunk: bool) -> None:
        self.response = response
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.first_chunk_at: float | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        partial = b""  # an event cut by the end of a read: held until it is complete
        async for data in self.response.aiter_raw():
            data = partial + data if partial else data
            end = data.rfind(EVENT_END) + len(EVENT_END)
            if end < len(EVENT_END):
                partial = data
                continue
            complete, partial = data[:end], data[end:]
            if USAGE in complete:
                complete, usage = sse.usage_taken(complete, self.keep_usage_chunk)
                self.usage = usage or self.usage
            if complete:
                if self.first_chunk_at is None:
                    self.first_chunk_at = time.perf_counter()
                yield complete
        if partial.strip():
            yield partial
