"""Checks of one parsed training example, per format, in OpenAI's words where OpenAI has words.

A check returns its findings as ``(message number or None, detail)`` pairs, message numbers
1-based; an empty list means the example is fine. The hot path (a valid chat example) allocates
almost nothing, because a 512 MB file holds millions of examples.
"""

from __future__ import annotations

from typing import Any

import orjson

Finding = tuple[int | None, str]

CHAT = "fine-tune-chat"
PREFERENCE = "fine-tune-preference"
COMPLETION = "fine-tune-completion"
REINFORCEMENT = "fine-tune-reinforcement"
PROMPT_ROLES = ("user", "developer")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_EXPECTED_ROLES = ", ".join(f"'{role}'" for role in ROLES)
_JSON_KINDS = {
    dict: "a JSON object",
    list: "a JSON array",
    str: "a JSON string",
    bool: "a JSON boolean",
    int: "a JSON number",
    float: "a JSON number",
    type(None): "JSON null",
}


def json_kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def format_of(example: dict[str, Any], method: str | None = None) -> str | None:
    """Which of OpenAI's training formats an example is written in, from its keys: a
    ``messages`` example is a reinforcement prompt in a reinforcement job, a chat example in
    other jobs, and, in a file not yet bound to a job, a prompt when it ends with a user or
    developer turn and has no assistant turn to train on."""
    if "messages" in example:
        if method == "reinforcement":
            return REINFORCEMENT
        if method is None and _is_prompt(example["messages"]):
            return REINFORCEMENT
        return CHAT
    if "input" in example or "preferred_output" in example or "non_preferred_output" in example:
        return PREFERENCE
    if "prompt" in example or "completion" in example:
        return COMPLETION
    return None


def check_chat(example: dict[str, Any], accepts_images: bool) -> list[Finding]:
    """A supervised chat example: ``messages`` with at least one assistant turn that trains."""
    messages = example["messages"]
    findings = _check_conversation(messages, accepts_images)
    if type(messages) is not list or not messages:
        return findings
    assistants = [m for m in messages if type(m) is dict and m.get("role") == "assistant"]
    if not assistants:
        findings.append(
            (None, "no assistant message; an example needs at least one message with role "
             "'assistant' to train on")
        )  # fmt: skip
    elif not findings and all(m.get("weight", 1) == 0 for m in assistants):
        findings.append(
            (None, "every assistant message has weight 0, so the example has nothing to train on")
        )
    findings.extend(_check_tools_fields(example))
    return findings


def _is_prompt(messages: object) -> bool:
    if type(messages) is not list or not messages or type(messages[-1]) is not dict:
        return False
    return messages[-1].get("role") in PROMPT_ROLES and not any(
        type(m) is dict and m.get("role") == "assistant" for m in messages
    )


def check_reinforcement(example: dict[str, Any], accepts_images: bool) -> list[Finding]:
    """A reinforcement prompt: ``messages`` ending with the user (or developer) turn the model
    answers, optional ``tools``; every other key is the grader's ``item``."""
    messages = example["messages"]
    findings = _check_conversation(messages, accepts_images)
    if type(messages) is list and messages and type(messages[-1]) is dict:
        role = messages[-1].get("role")
        if role not in PROMPT_ROLES:
            findings.append(
                (len(messages), f"the last message must be from the user or developer (the "
                 f"prompt the model answers), not {role!r}")
            )  # fmt: skip
    findings.extend(_check_tools_fields(example))
    return findings


def check_preference(example: dict[str, Any], accepts_images: bool) -> list[Finding]:
    """A DPO example: a prompt conversation and one preferred and one non-preferred answer."""
    prompt = example.get("input")
    if type(prompt) is not dict:
        return [(None, f"'input' must be an object with 'messages', got {json_kind(prompt)}")]
    findings = _check_conversation(prompt.get("messages"), accepts_images, key="input.messages")
    findings.extend(_check_tools_fields(prompt, prefix="input."))
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if (
            type(output) is not list
            or len(output) != 1
            or type(output[0]) is not dict
            or output[0].get("role") != "assistant"
        ):
            findings.append((None, f"'{key}' must be a list holding exactly one assistant message"))
        elif (problem := _assistant_problem(output[0], accepts_images)) is not None:
            findings.append((None, f"'{key}': {problem}"))
    return findings


def check_completion(example: dict[str, Any]) -> list[Finding]:
    """A legacy example: a ``prompt`` string and a non-empty ``completion`` string."""
    findings: list[Finding] = []
    prompt, completion = example.get("prompt"), example.get("completion")
    if type(prompt) is not str:
        findings.append((None, f"'prompt' must be a string, got {json_kind(prompt)}"))
    if type(completion) is not str or not completion:
        findings.append((None, "'completion' must be a non-empty string"))
    return findings


def _check_conversation(
    messages: object, accepts_images: bool, key: str = "messages"
) -> list[Finding]:
    if type(messages) is not list:
        return [(None, f"'{key}' must be a list of messages, got {json_kind(messages)}")]
    if not messages:
        return [(None, f"'{key}' is empty; an example needs at least one message")]
    findings: list[Finding] = []
    call_ids: set[str] = set()
    for number, message in enumerate(messages, start=1):
        if type(message) is not dict:
            findings.append((number, f"expected a message object, got {json_kind(message)}"))
            continue
        problem = _message_problem(message, accepts_images, call_ids)
        if problem is not None:
            findings.append((number, problem))
    return findings


def _message_problem(
    message: dict[str, Any], accepts_images: bool, call_ids: set[str]
) -> str | None:
    role = message.get("role")
    if role == "assistant":
        problem = _assistant_problem(message, accepts_images)
        if problem is None:
            call_ids.update(_call_ids(message))
    elif "weight" in message:
        return f"'weight' is only allowed on assistant messages, found on a {role} message"
    elif role in ("user", "system", "developer"):
        problem = _content_problem(message, accepts_images and role == "user")
    elif role == "tool":
        problem = _content_problem(message, False) or _tool_result_problem(message, call_ids)
    elif role == "function":
        if type(message.get("name")) is not str:
            return "function message needs a string 'name'"
        problem = _content_problem(message, False)
    elif role is None:
        return "Discriminator 'role' is missing in value"
    else:
        return (
            f"Input tag '{role}' found using 'role' does not match any of the expected tags: "
            f"{_EXPECTED_ROLES}"
        )
    if problem is None and "name" in message and type(message["name"]) is not str:
        problem = f"'name' must be a string, got {json_kind(message['name'])}"
    return problem


def _content_problem(message: dict[str, Any], accepts_images: bool) -> str | None:
    role = message.get("role")
    if "content" not in message or message["content"] is None:
        return f"{role} message is missing 'content'"
    content = message["content"]
    if type(content) is str:
        return None
    if type(content) is not list:
        return f"'content' must be a string or a list of content parts, got {json_kind(content)}"
    if not content:
        return "'content' is an empty list of content parts"
    for number, part in enumerate(content, start=1):
        problem = _part_problem(part, accepts_images)
        if problem is not None:
            return f"content part {number}: {problem}"
    return None


def _part_problem(part: object, accepts_images: bool) -> str | None:
    if type(part) is not dict:
        return f"expected a content part object, got {json_kind(part)}"
    kind = part.get("type")
    if kind == "text":
        return None if type(part.get("text")) is str else "a text part needs a string 'text'"
    if kind == "image_url":
        if not accepts_images:
            return "images ('image_url') are not supported; the base model takes text only"
        image = part.get("image_url")
        return None if type(image) is dict and type(image.get("url")) is str else (
            "an image part needs 'image_url' with a string 'url'"
        )  # fmt: skip
    return f"content part type {kind!r} is not supported; fine-tuning takes 'text' parts" + (
        " and 'image_url' parts" if accepts_images else ""
    )


def _assistant_problem(message: dict[str, Any], accepts_images: bool) -> str | None:
    weight = message.get("weight", 1)
    if type(weight) is not int or weight not in (0, 1):
        return f"'weight' must be 0 or 1, got {orjson.dumps(weight).decode()}"
    calls = message.get("tool_calls")
    function_call = message.get("function_call")
    if calls is not None:
        problem = _tool_calls_problem(calls)
        if problem is not None:
            return problem
    if function_call is not None:
        problem = _function_problem(function_call, "'function_call'")
        if problem is not None:
            return problem
    content = message.get("content")
    if content is None or content == "":
        if calls or function_call is not None:
            return None
        if content is None:
            return "assistant message needs 'content' or 'tool_calls'"
        return "assistant message has empty 'content' and no 'tool_calls'"
    problem = _content_problem(message, False)
    if problem is not None and accepts_images and "image" in problem:
        return "images are not allowed in assistant messages"
    return problem


def _tool_calls_problem(calls: object) -> str | None:
    if type(calls) is not list:
        return f"'tool_calls' must be a list, got {json_kind(calls)}"
    for number, call in enumerate(calls, start=1):
        where = f"tool call {number}"
        if type(call) is not dict:
            return f"{where}: expected an object, got {json_kind(call)}"
        if type(call.get("id")) is not str or not call["id"]:
            return f"{where}: 'id' must be a non-empty string"
        if call.get("type", "function") != "function":
            return f"{where}: 'type' must be 'function', got {call.get('type')!r}"
        problem = _function_problem(call.get("function"), "'function'")
        if problem is not None:
            return f"{where}: {problem}"
    return None


def _function_problem(function: object, what: str) -> str | None:
    if type(function) is not dict:
        return f"{what} must be an object with 'name' and 'arguments', got {json_kind(function)}"
    name, arguments = function.get("name"), function.get("arguments")
    if type(name) is not str or not name:
        return f"{what} needs a non-empty string 'name'"
    if type(arguments) is not str:
        return (
            f"{what}.arguments must be a string holding JSON (as the API returns it), "
            f"got {json_kind(arguments)}"
        )
    try:
        orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return f"{what}.arguments is not valid JSON: {arguments[:80]!r}"
    return None


def _call_ids(message: dict[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    return [call["id"] for call in calls] if type(calls) is list else []


def _tool_result_problem(message: dict[str, Any], call_ids: set[str]) -> str | None:
    call_id = message.get("tool_call_id")
    if type(call_id) is not str:
        return "tool message needs a string 'tool_call_id'"
    if call_id not in call_ids:
        return (
            f"'tool_call_id' {call_id!r} does not match the id of any tool call in an earlier "
            "assistant message"
        )
    return None


def _check_tools_fields(example: dict[str, Any], prefix: str = "") -> list[Finding]:
    findings: list[Finding] = []
    if "tools" in example and example["tools"] is not None:
        problem = _tools_problem(example["tools"])
        if problem is not None:
            findings.append((None, f"'{prefix}tools' {problem}"))
    if "functions" in example and example["functions"] is not None:
        functions = example["functions"]
        if type(functions) is not list or not all(
            type(f) is dict and type(f.get("name")) is str for f in functions
        ):
            findings.append((None, f"'{prefix}functions' must be a list of objects with a 'name'"))
    parallel = example.get("parallel_tool_calls")
    if parallel is not None and type(parallel) is not bool:
        findings.append(
            (
                None,
                f"'{prefix}parallel_tool_calls' must be true or false, got {json_kind(parallel)}",
            )
        )
    return findings


def _tools_problem(tools: object) -> str | None:
    if type(tools) is not list:
        return f"must be a list of tools, got {json_kind(tools)}"
    for number, tool in enumerate(tools, start=1):
        if type(tool) is not dict or tool.get("type", "function") != "function":
            return f"tool {number} must be an object with type 'function'"
        function = tool.get("function")
        if type(function) is not dict or type(function.get("name")) is not str:
            return f"tool {number} needs a 'function' object with a string 'name'"
        parameters = function.get("parameters")
        if parameters is not None and type(parameters) is not dict:
            return f"tool {number}: 'function.parameters' must be a JSON schema object"
    return None
