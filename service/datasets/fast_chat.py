"""A fast yes for valid chat examples: msgspec decodes and type-checks the line in C.

``accepts`` answers True only for a chat example the checks in ``checks.py`` would pass too (a
property test holds the two together); anything else, from bad JSON to an unknown role, gets
False, and the validator then runs the Python checks, which explain the problem. So valid lines,
almost all lines, cost about one ``orjson.loads``, and the words of every error live in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

NonEmpty = Annotated[str, Meta(min_length=1)]


class TextPart(Struct):
    type: Literal["text"]
    text: str


Content = str | Annotated[list[TextPart], Meta(min_length=1)]


class FunctionCall(Struct):
    name: NonEmpty
    arguments: str


class ToolCall(Struct):
    id: NonEmpty
    function: FunctionCall
    type: Literal["function"] = "function"


class _Message(Struct, tag_field="role", kw_only=True):
    name: str | UnsetType = UNSET


class _Prompt(_Message):
    content: Content
    weight: Any = UNSET  # present at all on a message that is not the assistant's: a problem


class System(_Prompt, tag="system"):
    pass


class Developer(_Prompt, tag="developer"):
    pass


class User(_Prompt, tag="user"):
    pass


class Tool(_Prompt, tag="tool"):
    tool_call_id: str = ""


class Function(_Prompt, tag="function"):
    pass


class Assistant(_Message, tag="assistant"):
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    weight: Literal[0, 1] = 1


class FunctionSpec(Struct):
    name: str
    parameters: dict[str, Any] | None = None


class ToolSpec(Struct):
    function: FunctionSpec
    type: Literal["function"] = "function"


class ChatExample(Struct):
    messages: Annotated[
        list[System | Developer | User | Assistant | Tool | Function], Meta(min_length=1)
    ]
    tools: list[ToolSpec] | None = None
    functions: list[FunctionSpec] | None = None
    parallel_tool_calls: bool | None = None


_decode = msgspec.json.Decoder(ChatExample).decode


def accepts(raw: bytes) -> bool:
    """True when ``raw`` is certainly a valid chat example; False means "ask the checks"."""
    try:
        example = _decode(raw)
    except msgspec.DecodeError:
        return False
    trains = False
    call_ids: set[str] = set()
    for message in example.messages:
        if type(message) is Assistant:
            if not _assistant_ok(message, call_ids):
                return False
            trains = trains or message.weight == 1
        elif (
            message.weight is not UNSET
            or (type(message) is Tool and message.tool_call_id not in call_ids)
            or (type(message) is Function and message.name is UNSET)
        ):
            return False
    return trains


def _assistant_ok(message: Assistant, call_ids: set[str]) -> bool:
    says_nothing = message.content is None or message.content == ""
    if says_nothing and not message.tool_calls and message.function_call is None:
        return False
    for call in message.tool_calls or ():
        if not _is_json(call.function.arguments):
            return False
        call_ids.add(call.id)
    return message.function_call is None or _is_json(message.function_call.arguments)


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
