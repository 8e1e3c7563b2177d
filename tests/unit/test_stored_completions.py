"""Stored chat completions and distillation, their pure parts: the stored object's shape, listed
messages, a stream assembled into its completion, metadata rules, training lines."""

from __future__ import annotations

from typing import Any

import pytest

from service.completions.stored import (
    StoreRequest,
    StreamedCompletion,
    checked_metadata,
    listed_message,
    stored_object,
)
from service.db.models import StoredChatCompletion, StoredResponse
from service.distillation.service import completion_example, response_example
from service.errors import InvalidRequestError

ANSWER = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1_765_000_000,
    "model": "tiny-chat",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
              "prompt_tokens_details": None},
}  # fmt: skip
BODY = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}]}


def test_the_stored_object_has_the_listed_shape_not_the_create_responses() -> None:
    stored = stored_object({**BODY, "temperature": 0, "user": "u1"}, ANSWER, {"k": "v"}, "req_1")

    assert stored["id"] == "chatcmpl-abc" and stored["object"] == "chat.completion"
    assert stored["request_id"] == "req_1" and stored["metadata"] == {"k": "v"}
    assert stored["usage"] == {"total_tokens": 9, "completion_tokens": 2, "prompt_tokens": 7}
    assert stored["temperature"] == 0.0 and stored["top_p"] == 1.0
    assert stored["input_user"] == "u1" and stored["tools"] is None
    (choice,) = stored["choices"]
    assert choice["message"] == {
        "content": "Hi.", "role": "assistant", "tool_calls": None, "function_call": None,
        "refusal": None,
    }  # fmt: skip
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None


def test_store_and_metadata_are_openfts_and_never_reach_the_model_server() -> None:
    asked = StoreRequest.of({**BODY, "store": True, "metadata": {"a": "b"}}, "req_2")

    assert asked.store and asked.metadata == {"a": "b"} and asked.forwarded == BODY
    assert not StoreRequest.of({**BODY, "store": None}, "req_3").store


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ("text", "metadata"),
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata." + "k" * 65),
        ({"k": "v" * 513}, "metadata.k"),
        ({"k": 3}, "metadata.k"),
    ],
)
def test_metadata_over_openais_limits_is_a_400_naming_it(metadata: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        checked_metadata(metadata)
    assert refused.value.param == param


def test_store_must_be_a_boolean() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        StoreRequest.of({**BODY, "store": "yes"}, "req")
    assert refused.value.param == "store"


def test_listed_messages_join_text_parts_and_keep_the_parts() -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]

    listed = listed_message("chatcmpl-x", 1, {"role": "user", "content": parts, "name": "ann"})

    assert listed["id"] == "chatcmpl-x-1" and listed["content"] == "Hello there"
    assert listed["name"] == "ann" and len(listed["content_parts"]) == 2
    assert listed["content_parts"][0] == {
        "type": "text", "text": "Hello ", "image_url": None, "input_audio": None, "file": None
    }  # fmt: skip
    assert (
        listed_message("c", 0, {"role": "system", "content": "Be brief."})["content_parts"] is None
    )


def test_a_stream_is_assembled_into_the_completion_it_carried() -> None:
    stream = StreamedCompletion()
    base = {"id": "chatcmpl-s", "created": 5, "model": "m", "object": "chat.completion.chunk"}
    for delta, finish in [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get"}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}, "tool_calls"),
    ]:  # fmt: skip
        stream.feed({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    stream.feed({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})

    completion = stream.completion()

    assert completion["id"] == "chatcmpl-s" and completion["usage"]["completion_tokens"] == 4
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Hello"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_1" and call["function"] == {"name": "get", "arguments": '{"a": 1}'}


def stored_completion(answer: dict[str, Any], tools: list[Any] | None = None) -> Any:
    body = {**BODY, "tools": tools} if tools else BODY
    return StoredChatCompletion(
        messages=BODY["messages"], completion=stored_object(body, answer, {}, "req")
    )


def test_a_stored_completion_becomes_the_conversation_with_its_answer() -> None:
    example = completion_example(stored_completion(ANSWER))

    assert example == {
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]
    }


def test_a_cut_off_or_empty_answer_is_not_distilled() -> None:
    cut = {**ANSWER, "choices": [{**ANSWER["choices"][0], "finish_reason": "length"}]}
    empty_message = {"role": "assistant", "content": ""}
    empty = {**ANSWER, "choices": [{**ANSWER["choices"][0], "message": empty_message}]}

    assert completion_example(stored_completion(cut)) is None
    assert completion_example(stored_completion(empty)) is None


def test_a_tool_call_answer_is_distilled_with_its_tools() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer = {
        **ANSWER,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

    example = completion_example(stored_completion(answer, tools))

    assert example is not None and example["tools"] == tools
    assert example["messages"][-1] == {"role": "assistant", "content": "", "tool_calls": [call]}


def test_a_stored_response_becomes_its_whole_chain_as_chat() -> None:
    said = [{"type": "input_text", "text": "Hello"}]
    answered = [{"type": "output_text", "text": "Hi.", "annotations": []}]
    row = StoredResponse(
        input_items=[{"type": "message", "role": "user", "content": said, "id": "msg_1"}],
        response={
            "status": "completed",
            "instructions": "Be brief.",
            "tools": [],
            "output": [{"type": "message", "role": "assistant", "content": answered, "id": "m2"}],
        },
    )

    assert response_example(row) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
        ]
    }
    row.response = {**row.response, "status": "incomplete"}
    assert response_example(row) is None
