"""Responses <-> Chat Completions: the chat request a response is served as, and the response
object (and its output items) made from the chat completion that answered it."""

from __future__ import annotations

from typing import Any

from service.ids import new_output_item_id
from service.responses.request import ResponseRequest

Item = dict[str, Any]


def chat_messages(instructions: str | None, items: list[Item]) -> list[dict[str, Any]]:
    """The chat messages for ``items`` (earlier turns first), after ``instructions``."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if item["type"] == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            text = "".join(part["text"] for part in item["content"])
            messages.append({"role": role, "content": text})
        elif item["type"] == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one turn: text and calls
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:  # function_call_output
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
    return messages


def chat_request(request: ResponseRequest, history: list[Item]) -> dict[str, Any]:
    """The chat completion request that serves ``request`` after the ``history`` replayed from
    its previous responses (their input and output items, oldest first)."""
    body = request.body
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(body.get("instructions"), [*history, *request.items]),
    }
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = [chat_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        chat["tool_choice"] = choice
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A flat Responses function tool as Chat Completions nests it. ``strict`` defaults to true
    in the Responses API (and to false in Chat Completions, which then leaves it out)."""
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not False:
        function["strict"] = True
    return {"type": "function", "function": function}


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    form = (text or {}).get("format") or {"type": "text"}
    if form["type"] == "json_object":
        return {"type": "json_object"}
    if form["type"] == "json_schema":
        schema = {
            "name": form["name"],
            "schema": form["schema"],
            "strict": bool(form.get("strict")),
        }
        if form.get("description"):
            schema["description"] = form["description"]
        return {"type": "json_schema", "json_schema": schema}
    return None


def output_items(completion: dict[str, Any]) -> tuple[list[Item], bool]:
    """A chat completion's answer as output items, and whether it stopped at the token limit."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    truncated = choice.get("finish_reason") == "length"
    calls = message.get("tool_calls") or []
    items: list[Item] = []
    if message.get("content") or not calls:
        items.append(message_item(message.get("content") or "", truncated=truncated))
    items.extend(
        function_call_item(call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in calls
    )
    return items, truncated


def message_item(
    text: str, *, truncated: bool = False, item_id: str | None = None, done: bool = True
) -> Item:
    status = ("incomplete" if truncated else "completed") if done else "in_progress"
    content = [output_text(text)] if done else []
    return {
        "id": item_id or new_output_item_id("msg"),
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def function_call_item(
    call_id: str, name: str, arguments: str, *, item_id: str | None = None, done: bool = True
) -> Item:
    return {
        "id": item_id or new_output_item_id("fc"),
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def response_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage as a response's: input, output and total tokens, with their details."""
    if usage is None:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    request: ResponseRequest,
    *,
    response_id: str,
    created_at: int,
    status: str,
    output: list[Item],
    usage: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The response object, keys in api.openai.com's order; ``status`` ``incomplete`` means the
    token limit stopped it."""
    body = request.body
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    text = {
        "format": (body.get("text") or {}).get("format") or {"type": "text"},
        "verbosity": (body.get("text") or {}).get("verbosity") or "medium",
    }
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": request.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": request.store,
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": _echoed_tool_choice(body.get("tool_choice")),
        "tools": [_echoed_tool(tool) for tool in body.get("tools") or []],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _echoed_tool_choice(choice: Any) -> Any:
    return "auto" if choice is None else choice


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "description": tool.get("description"),
        "name": tool["name"],
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") is not False,
    }
