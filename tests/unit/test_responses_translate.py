"""The Responses API's translation: requests checked and turned into chat completions, answers and
chunks turned into response objects and OpenAI's event sequence."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import InvalidRequestError
from service.responses.request import parse_request
from service.responses.stream import ResponseEvents
from service.responses.translate import chat_request, output_items, response_object

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def refused(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request({"model": "m", "input": "hi", **body})
    assert caught.value.status_code == 400
    return caught.value


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    request = parse_request(
        {
            "model": "m",
            "input": "Hi",
            "instructions": "Be brief.",
            "max_output_tokens": 32,
            "temperature": 0,
            "text": {"format": {"type": "json_object"}},
        }
    )

    chat = chat_request(request, [])

    assert chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0,
        "max_tokens": 32,
        "response_format": {"type": "json_object"},
    }
    (item,) = request.items
    assert item["id"].startswith("msg_") and len(item["id"]) == 54
    assert item["content"] == [{"type": "input_text", "text": "Hi"}]


def test_a_tool_round_trip_replays_as_chat_messages() -> None:
    history = parse_request(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [{"type": "input_text", "text": "Paris?"}]},
            ],
        }
    ).items
    history += [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "status": "completed",
        },
    ]
    request = parse_request(
        {
            "model": "m",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
        }
    )

    chat = chat_request(request, history)

    assert chat["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    (tool,) = chat["tools"]
    assert list(tool["function"]) == ["name", "description", "parameters", "strict"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_a_strict_json_schema_becomes_the_chat_response_format() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    request = parse_request(
        {
            "model": "m",
            "input": "x",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "verdict",
                    "schema": schema,
                    "strict": True,
                }
            },
        }
    )

    assert chat_request(request, [])["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
        ({"background": True}, "background", "unsupported_parameter"),
        ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort", "unsupported_parameter"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_value"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "invalid_value"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"max_output_tokens": 4}, "max_output_tokens", "integer_below_min_value"),
        (
            {"text": {"format": {"type": "json_schema"}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        ({"metadata": {"k": 1}}, "metadata", "invalid_value"),
        ({"input": []}, "input", "missing_required_parameter"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_its_param(
    body: dict[str, Any], param: str, code: str
) -> None:
    error = refused(body)

    assert (error.param, error.code) == (param, code)


def test_settings_that_ask_for_nothing_are_accepted() -> None:
    request = parse_request(
        {
            "model": "m",
            "input": "x",
            "background": False,
            "truncation": "disabled",
            "reasoning": {"effort": None},
            "include": [],
            "top_logprobs": 0,
            "store": False,
        }
    )

    assert request.store is False and request.stream is False


def test_a_whole_float_is_an_integer_as_json_schema_reads_it() -> None:
    request = parse_request({"model": "m", "input": "x", "max_output_tokens": 16.0})

    assert chat_request(request, [])["max_tokens"] == 16
    assert type(chat_request(request, [])["max_tokens"]) is int
    assert refused({"max_output_tokens": 16.5}).param == "max_output_tokens"


def test_a_chat_answer_becomes_output_items_and_a_response_object() -> None:
    request = parse_request({"model": "ft:m:p::x", "input": "hi", "metadata": {"a": "b"}})
    completion = {
        "choices": [
            {
                "finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": "Hel",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }

    output, truncated = output_items(completion)
    answer = response_object(
        request, response_id="resp_1", created_at=1, status="incomplete", output=output, usage=None
    )

    assert truncated
    assert [item["type"] for item in output] == ["message", "function_call"]
    assert output[0]["status"] == "incomplete" and output[0]["content"][0]["text"] == "Hel"
    assert output[1]["call_id"] == "call_9" and output[1]["id"].startswith("fc_")
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["metadata"] == {"a": "b"} and answer["store"] is True
    assert answer["model"] == "ft:m:p::x" and answer["tool_choice"] == "auto"


def chunk(content: str | None = None, calls: Any = None, finish: str | None = None) -> Any:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if calls is not None:
        delta["tool_calls"] = calls
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def stream_of(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ResponseEvents]:
    request = parse_request({"model": "m", "input": "hi"})

    def make(status: str, output: Any, usage: Any) -> dict[str, Any]:
        return response_object(
            request, response_id="resp_1", created_at=1, status=status, output=output, usage=usage
        )

    events = ResponseEvents(make("in_progress", [], None), make)
    found = events.start()
    for each in chunks:
        found += events.feed(each)
    return found + events.finish(), events


def test_streamed_text_follows_openais_event_order() -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}

    events, stream = stream_of([chunk(""), chunk("Hel"), chunk("lo", finish="stop"), usage])

    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert (
        events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    )
    assert events[6]["text"] == "Hello" and events[8]["item"]["status"] == "completed"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 4 and final["usage"]["total_tokens"] == 6
    assert stream.final == final


def test_streamed_tool_calls_are_function_call_items() -> None:
    first = [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    more = [{"index": 0, "function": {"arguments": '{"city": '}}]
    last = [{"index": 0, "function": {"arguments": '"Paris"}'}}]

    events, _ = stream_of(
        [chunk(calls=first), chunk(calls=more), chunk(calls=last, finish="tool_calls")]
    )

    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[2]["item"]["type"] == "function_call" and events[2]["item"]["arguments"] == ""
    assert events[5]["arguments"] == '{"city": "Paris"}' and events[5]["name"] == "get_weather"
    (item,) = events[-1]["response"]["output"]
    assert item["call_id"] == "call_1" and item["status"] == "completed"


def test_a_stream_cut_by_the_token_limit_ends_incomplete() -> None:
    events, _ = stream_of([chunk("a"), chunk("b", finish="length")])

    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


def test_an_empty_answer_is_still_one_message() -> None:
    events, _ = stream_of([chunk(finish="stop")])

    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert "response.output_item.done" in [e["type"] for e in events]
