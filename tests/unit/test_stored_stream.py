"""A stored streamed completion (``store: true, stream: true``) reads the relay's output, whose
reads may hold several server-sent events, or end inside one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.auth.principal import Principal
from service.completions.stored import ChatCompletionStore, Json, StoreRequest
from service.settings import Settings

PRINCIPAL = Principal("proj_a", "acme", "key_a")
CHUNKS = [
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
     "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
     "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
]  # fmt: skip
STREAM = b"".join(b"data: %s\n\n" % json.dumps(c).encode() for c in CHUNKS) + b"data: [DONE]\n\n"


class Recording(ChatCompletionStore):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(None, Settings(data_dir=tmp_path))  # type: ignore[arg-type]
        self.stored: list[Json] = []

    def add(self, principal: Principal, body: Json, answer: Json, request: StoreRequest) -> None:
        self.stored.append(answer)


def relayed(reads: list[bytes], store: Recording, wants_usage: bool) -> bytes:
    async def relay() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    request = StoreRequest.of({"model": "tiny", "store": True, "stream": True}, "req_1")

    async def collect() -> bytes:
        recorded = store.recorded(PRINCIPAL, request, relay(), wants_usage)
        return b"".join([part async for part in recorded])

    return asyncio.run(collect())


@pytest.mark.parametrize("cut", [len(STREAM), 7, 100, 151])
def test_the_stream_is_stored_whole_however_its_events_are_read(tmp_path: Path, cut: int) -> None:
    # The relay cuts reads after whole events; ``cut`` gives one read, or reads of that size
    # re-joined at event ends as the relay does.
    events = [e + b"\n\n" for e in STREAM.split(b"\n\n") if e]
    reads, read = [], b""
    for event in events:
        read += event
        if len(read) >= cut:
            reads.append(read)
            read = b""
    reads += [read] if read else []
    store = Recording(tmp_path)

    with_usage = relayed(reads, store, wants_usage=True)
    without = relayed(reads, store, wants_usage=False)

    assert with_usage == STREAM
    assert without == STREAM.replace(b"data: %s\n\n" % json.dumps(CHUNKS[2]).encode(), b"")
    assert len(store.stored) == 2
    answer = store.stored[0]
    assert answer["choices"][0]["message"]["content"] == "Hello"
    assert answer["usage"]["total_tokens"] == 5
