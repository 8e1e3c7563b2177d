"""A streamed response: chat completion chunks in, OpenAI's Responses events out, in its order
(``response.created`` ... ``response.completed``), with one ``sequence_number`` across them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from service.ids import new_output_item_id
from service.responses.translate import (
    Item,
    function_call_item,
    message_item,
    output_text,
    response_usage,
)

Event = dict[str, Any]


def sse(event: Event) -> bytes:
    """One event as api.openai.com frames it: ``event:`` and ``data:`` lines (no ``[DONE]``)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponseEvents:
    """Turns the chunks of one chat completion into the events of one response.

    ``finish`` builds the final response with ``make(status, output, usage)``.
    """

    def __init__(self, snapshot: dict[str, Any], make: Callable[..., dict[str, Any]]) -> None:
        self._snapshot = snapshot  # the response while in progress (no output, no usage)
        self._make = make
        self._sequence = 0
        self.output: list[Item] = []
        self._text: str | None = None  # the open message's text so far, when one is open
        self._calls: dict[int, Item] = {}  # open function calls by the chunk's tool-call index
        self._usage: dict[str, Any] | None = None
        self._truncated = False
        self.final: dict[str, Any] | None = None

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=copy.deepcopy(self._snapshot)),
            self._event("response.in_progress", response=copy.deepcopy(self._snapshot)),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events one chat completion chunk makes."""
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason") == "length":
                self._truncated = True
        return events

    def finish(self) -> list[Event]:
        """Close what is open and complete the response (``response.incomplete`` when the token
        limit stopped it)."""
        events = self._open_message() if not self.output else []
        events += self._close_message() + self._close_calls()
        status = "incomplete" if self._truncated else "completed"
        self.final = self._make(status, self.output, response_usage(self._usage))
        kind = "response.incomplete" if self._truncated else "response.completed"
        return [*events, self._event(kind, response=self.final)]

    def failed(self, message: str) -> list[Event]:
        """The last event when the model server stops answering mid-stream."""
        return [self._event("error", code="server_error", message=message, param=None)]

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _index(self, item: Item) -> int:
        return next(i for i, found in enumerate(self.output) if found is item)

    def _open_message(self) -> list[Event]:
        item = message_item("", done=False)
        self.output.append(item)
        self._text = ""
        index = self._index(item)
        return [
            self._event("response.output_item.added", output_index=index, item=copy.deepcopy(item)),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=output_text(""),
            ),
        ]

    def _text_delta(self, delta: str) -> list[Event]:
        events = self._open_message() if self._text is None else []
        self._text = (self._text or "") + delta
        item = self._open_item()
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self._index(item),
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _open_item(self) -> Item:
        return next(i for i in reversed(self.output) if i["type"] == "message")

    def _close_message(self) -> list[Event]:
        if self._text is None:
            return []
        item, text = self._open_item(), self._text
        self._text = None
        index = self._index(item)
        item.update(message_item(text, truncated=self._truncated, item_id=item["id"]))
        part = output_text(text)
        return [
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
            self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)),
        ]

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = int(call.get("index") or 0)
        function = call.get("function") or {}
        item = self._calls.get(position)
        if item is None:
            events += self._close_message()
            call_id = call.get("id") or "call_" + new_output_item_id("fc")[3:27]
            item = function_call_item(call_id, function.get("name") or "", "", done=False)
            self._calls[position] = item
            self.output.append(item)
            events.append(
                self._event(
                    "response.output_item.added",
                    output_index=self._index(item),
                    item=copy.deepcopy(item),
                )
            )
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index(item),
                    delta=function["arguments"],
                )
            )
        return events

    def _close_calls(self) -> list[Event]:
        events = []
        for item in self._calls.values():
            item["status"] = "completed"
            index = self._index(item)
            events += [
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                ),
                self._event(
                    "response.output_item.done", output_index=index, item=copy.deepcopy(item)
                ),
            ]
        self._calls = {}
        return events
