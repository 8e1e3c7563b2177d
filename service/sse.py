"""Server-sent events as OpenAI's streams carry them: a read split into its events, the JSON chunk
an event carries, and the usage-only chunk a stream ends with when ``include_usage`` is asked."""

from __future__ import annotations

from typing import Any

import orjson

EVENT_END = b"\n\n"
DONE = b"[DONE]"
USAGE = b'"usage"'


def events(data: bytes) -> list[bytes]:
    """The events in ``data``, each with the blank line that ended it (none for an unfinished
    last one); blank pieces left out."""
    pieces = data.split(EVENT_END)
    last = pieces.pop()
    found = [piece + EVENT_END for piece in pieces if piece.strip()]
    if last.strip():
        found.append(last)
    return found


def payload(event: bytes) -> bytes:
    """What an event's ``data:`` line carries."""
    return event.strip().removeprefix(b"data:").strip()


def chunk_of(event: bytes) -> dict[str, Any] | None:
    """The JSON chunk an event carries; None for ``[DONE]``, comments and anything not an object."""
    data = payload(event)
    return orjson.loads(data) if data.startswith(b"{") else None


def is_usage_only(chunk: dict[str, Any]) -> bool:
    """The chunk ``stream_options.include_usage`` adds after the last choice: usage, no choices."""
    return bool(chunk.get("usage")) and not chunk.get("choices")


def usage_taken(data: bytes, keep_chunk: bool) -> tuple[bytes, dict[str, Any] | None]:
    """The events of ``data`` (the usage-only chunk left out unless ``keep_chunk``), and that
    chunk's usage; only events that mention ``usage`` are parsed."""
    kept, usage = [], None
    for event in events(data):
        chunk = chunk_of(event) if USAGE in event else None
        if chunk is not None and is_usage_only(chunk):
            usage = chunk["usage"]
            if not keep_chunk:
                continue
        kept.append(event)
    return b"".join(kept), usage
