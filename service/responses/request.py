"""A ``POST /v1/responses`` body, checked: what OpenFT honours, ignores or refuses (README: the
Responses API), and its input as stored items with ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import InvalidRequestError
from service.ids import new_output_item_id

# Honoured: translated into the chat completion the gateway serves, or echoed on the response.
HONOURED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "stream",
        "metadata",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "user",
    }
)
# Accepted and echoed, with no effect here (no hosted tools, caches or service tiers).
IGNORED = frozenset(
    {
        "include",
        "max_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "truncation",
        "background",
        "reasoning",
        "top_logprobs",
        "conversation",
        "prompt",
    }
)
# Of the ignored ones, these are refused unless they ask for nothing (False, None, 0, "disabled").
REFUSED_UNLESS_OFF: dict[str, str] = {
    "background": "Background responses are not supported by OpenFT; send the request without it.",
    "conversation": "Conversations are not supported by OpenFT; chain responses with "
    "previous_response_id.",
    "prompt": "Stored prompt templates are not supported by OpenFT; send instructions and input.",
    "top_logprobs": "top_logprobs is not supported on /v1/responses by OpenFT; use "
    "/v1/chat/completions with logprobs.",
    "truncation": "truncation 'auto' is not supported by OpenFT: a conversation longer than the "
    "model's context is refused, not cut. Send 'disabled' or leave it out.",
}
ROLES = ("user", "assistant", "system", "developer")
MAX_METADATA_KEYS = 16


def invalid(message: str, param: str, code: str | None = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


@dataclass(frozen=True)
class ResponseRequest:
    """A checked request: the body as sent, and its input as items with ids (as stored)."""

    body: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def store(self) -> bool:
        return self.body.get("store") is not False  # OpenAI stores by default

    @property
    def previous_response_id(self) -> str | None:
        found = self.body.get("previous_response_id")
        return str(found) if found else None


def parse_request(body: dict[str, Any]) -> ResponseRequest:
    """Check ``body`` as OpenAI would, refusing what OpenFT cannot honour (never a silent drop)."""
    tokens = body.get("max_output_tokens")
    if isinstance(tokens, float) and tokens.is_integer():  # 16.0 is an integer in JSON
        body = {**body, "max_output_tokens": int(tokens)}  # the caller's dict stays as sent
    for name in body:
        if name not in HONOURED and name not in IGNORED:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    _check_off(body)
    _check_sampling(body)
    _check_options(body)
    _check_tools(body)
    _check_text(body.get("text"))
    _check_metadata(body.get("metadata"))
    return ResponseRequest(body=body, items=input_items(body.get("input")))


def _check_off(body: dict[str, Any]) -> None:
    for name, message in REFUSED_UNLESS_OFF.items():
        if body.get(name) not in (None, False, 0, "disabled"):
            raise invalid(message, name, "unsupported_parameter")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise invalid("Invalid type for 'reasoning': expected an object.", "reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"):
        raise invalid(
            f"Unsupported parameter: 'reasoning.effort' is not supported with the model "
            f"'{body['model']}'.",
            "reasoning.effort",
            "unsupported_parameter",
        )


def _check_sampling(body: dict[str, Any]) -> None:
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
        if not low <= value <= high:
            raise invalid(
                f"Invalid '{name}': {value} is not between {low} and {high}.", name, "invalid_value"
            )
    tokens = body.get("max_output_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise invalid(
            "Invalid type for 'max_output_tokens': expected an integer.",
            "max_output_tokens",
            "invalid_type",
        )
    if tokens is not None and tokens < 16:
        raise invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {tokens} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )


def _check_options(body: dict[str, Any]) -> None:
    for name in ("store", "stream", "parallel_tool_calls", "background"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise invalid(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    for name in ("instructions", "previous_response_id", "user"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    include = body.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(isinstance(i, str) for i in include)
    ):
        raise invalid("Invalid type for 'include': expected an array of strings.", "include")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    names = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise invalid(
                f"Tool type {kind!r} is not supported by OpenFT: only function tools are "
                "(OpenFT runs no hosted tools).",
                f"tools[{i}].type",
                "unsupported_value",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(
                f"Missing required parameter: 'tools[{i}].name'.",
                f"tools[{i}].name",
                "missing_required_parameter",
            )
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(
                f"Invalid type for 'tools[{i}].parameters': expected an object.",
                f"tools[{i}].parameters",
                "invalid_type",
            )
        names.append(name)
    _check_tool_choice(body.get("tool_choice"), names)


def _check_tool_choice(choice: Any, names: list[str]) -> None:
    if choice is None or choice in ("auto", "none", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice.get("name") not in names:
            raise invalid(
                f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.",
                "tool_choice",
            )
        return
    raise invalid(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
        '{"type": "function", "name": ...} (OpenFT runs no hosted tools).',
        "tool_choice",
    )


def _check_text(text: Any) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise invalid("Invalid type for 'text': expected an object.", "text", "invalid_type")
    form = text.get("format")
    if form is None:
        return
    kind = form.get("type") if isinstance(form, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(
            f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
            "text.format.type",
        )
    if kind == "json_schema":
        if not isinstance(form.get("name"), str) or not form["name"]:
            raise invalid(
                "Missing required parameter: 'text.format.name'.",
                "text.format.name",
                "missing_required_parameter",
            )
        if not isinstance(form.get("schema"), dict):
            raise invalid(
                "Missing required parameter: 'text.format.schema'.",
                "text.format.schema",
                "missing_required_parameter",
            )


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
        raise invalid(
            "Invalid 'metadata': expected an object of at most 16 string keys and values.",
            "metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise invalid(
                f"Invalid 'metadata.{key}': keys are at most 64 characters and values strings "
                "of at most 512.",
                "metadata",
            )


def input_items(given: Any) -> list[dict[str, Any]]:
    """``input`` (a string, or a list of messages and items) as stored items, each with an id."""
    if isinstance(given, str):
        return [_message({"role": "user", "content": given}, "input")]
    if not isinstance(given, list) or not given:
        raise invalid(
            "Missing required parameter: 'input' (a string or a non-empty array of items).",
            "input",
            "missing_required_parameter",
        )
    return [_item(item, f"input[{i}]") for i, item in enumerate(given)]


def _item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message(item, param)
    if kind == "function_call":
        fields = _strings(item, ("call_id", "name", "arguments"), param)
        return {"id": _id_of(item, "fc"), "type": kind, "status": "completed", **fields}
    if kind == "function_call_output":
        call_id = _strings(item, ("call_id",), param)["call_id"]
        output = _text_of(item.get("output"), f"{param}.output")
        return {
            "id": _id_of(item, "fco"),
            "type": kind,
            "call_id": call_id,
            "output": output,
            "status": "completed",
        }
    raise invalid(
        f"Input item type {kind!r} is not supported by OpenFT: send messages, function_call and "
        "function_call_output items.",
        f"{param}.type",
        "unsupported_value",
    )


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise invalid(
            f"Invalid value: {role!r}. Supported values are: 'user', 'assistant', 'system' and "
            "'developer'.",
            f"{param}.role",
        )
    text = _text_of(item.get("content"), f"{param}.content")
    part = "output_text" if role == "assistant" else "input_text"
    content: dict[str, Any] = {"type": part, "text": text}
    if part == "output_text":
        content["annotations"] = []
    return {
        "id": _id_of(item, "msg"),
        "type": "message",
        "status": "completed",
        "role": role,
        "content": [content],
    }


def _id_of(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else new_output_item_id(prefix)


def _strings(item: dict[str, Any], names: tuple[str, ...], param: str) -> dict[str, str]:
    found = {}
    for name in names:
        value = item.get(name)
        if not isinstance(value, str):
            raise invalid(
                f"Missing required parameter: '{param}.{name}'.",
                f"{param}.{name}",
                "missing_required_parameter",
            )
        found[name] = value
    return found


def _text_of(content: Any, param: str) -> str:
    """A message's text: a string, or the text of its text parts (other parts are refused)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(
            f"Invalid type for '{param}': expected a string or an array of content parts.",
            param,
            "invalid_type",
        )
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text") or not isinstance(
            part.get("text"), str
        ):
            raise invalid(
                f"Content part type {kind!r} is not supported by OpenFT: its models read text "
                "(input_text and output_text parts).",
                f"{param}[{i}].type",
                "unsupported_value",
            )
        texts.append(part["text"])
    return "".join(texts)
