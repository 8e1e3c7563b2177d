"""The SSE splitter the relay and the stored-completion recorder share."""

from __future__ import annotations

from service import sse


def test_a_read_splits_into_its_events_keeping_an_unfinished_last_one() -> None:
    data = b'data: {"a": 1}\n\n\n\ndata: [DONE]\n\ndata: {"b"'
    assert sse.events(data) == [b'data: {"a": 1}\n\n', b"data: [DONE]\n\n", b'data: {"b"']
    assert b"".join(sse.events(b"data: x\n\n")) == b"data: x\n\n"
    assert sse.events(b"\n\n") == []


def test_chunks_are_json_objects_and_done_is_not_one() -> None:
    assert sse.chunk_of(b'data: {"id": "c"}\n\n') == {"id": "c"}
    assert sse.chunk_of(b"data: [DONE]\n\n") is None
    assert sse.chunk_of(b": keep-alive\n\n") is None
    assert sse.payload(b"data: [DONE]\n\n") == sse.DONE


def test_the_usage_only_chunk_is_told_from_a_last_choice_that_carries_usage() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert sse.is_usage_only({"choices": [], "usage": usage})
    assert not sse.is_usage_only({"choices": [{"index": 0}], "usage": usage})
    assert not sse.is_usage_only({"choices": [], "usage": None})
