"""Held-out examples from a chat JSONL file: the prompt, and the last assistant message as the
reference answer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import InvalidRequestError

PROMPT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


@dataclass(frozen=True)
class Example:
    number: int  # 1-based, counting the file's non-empty lines
    messages: list[dict[str, Any]]
    reference: str | None  # None: a reinforcement prompt, scored by a grader alone
    tools: list[Any] | None = None
    item: dict[str, Any] = field(default_factory=dict)  # what a grader reads as ``item``

    @property
    def prompt_text(self) -> str:
        return text_of(self.messages[-1].get("content"))


@dataclass
class HeldOut:
    examples: list[Example] = field(default_factory=list)
    skipped: int = 0


def read_examples(
    chunks: Iterable[bytes], limit: int, file_id: str, *, prompts: bool = False
) -> HeldOut:
    """The first ``limit`` usable examples; reading stops there, however big the file is.
    ``prompts``: reinforcement prompts (ending in a user or developer turn) count too."""
    held = HeldOut()
    for number, line in enumerate(_lines(chunks), start=1):
        example = parse(number, line, prompts=prompts)
        if example is None:
            held.skipped += 1
            continue
        held.examples.append(example)
        if len(held.examples) == limit:
            break
    if not held.examples:
        also = " or in a user turn (reinforcement prompts)" if prompts else ""
        raise InvalidRequestError(
            f"File {file_id} has no chat examples ending in an assistant message{also}.",
            param="file",
        )
    return held


def parse(number: int, line: bytes, *, prompts: bool = False) -> Example | None:
    """An example, or None when the line is not a chat that ends in an assistant answer (or,
    with ``prompts``, in the user or developer turn a reinforcement prompt ends in)."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    tools = row.get("tools") if isinstance(row.get("tools"), list) else None
    item = {k: v for k, v in row.items() if k not in ("messages", "tools")}
    last = messages[-1]
    if prompts and last.get("role") in ("user", "developer"):
        prompt = [{k: m[k] for k in PROMPT_KEYS if k in m} for m in messages]
        return Example(number, prompt, None, tools, item)
    reference = text_of(last.get("content"))
    if len(messages) < 2 or last.get("role") != "assistant" or not reference:
        return None
    prompt = [{k: m[k] for k in PROMPT_KEYS if k in m} for m in messages[:-1]]
    return Example(number, prompt, reference, tools, item)


def text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Non-empty lines of a byte stream."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest
