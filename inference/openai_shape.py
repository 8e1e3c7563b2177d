"""Bring vLLM's (non-streaming) response bodies to the shape api.openai.com sends.

vLLM writes ``null`` where OpenAI leaves a key out (``function_call``, the usage details) or sends
an empty list (``annotations``); clients that validate against OpenAI's schema choke on those.
"""

from __future__ import annotations

from typing import Any

OMITTED_WHEN_NULL = ("function_call", "audio", "prompt_tokens_details", "completion_tokens_details")


def _drop_nulls(section: dict[str, Any]) -> None:
    for key in OMITTED_WHEN_NULL:
        if key in section and section[key] is None:
            del section[key]


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    for choice in body.get("choices") or []:
        message = choice.get("message")
        if isinstance(message, dict):
            _drop_nulls(message)
            if message.get("annotations", []) is None:
                message["annotations"] = []
    if isinstance(body.get("usage"), dict):
        _drop_nulls(body["usage"])
    return body
