"""What a grader grades: a model's answer as OpenAI's ``sample`` namespace, and the judge port."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graders.config import SamplingParams


@dataclass(frozen=True)
class Sample:
    """A model's answer: ``output_json`` is set when the text parses as JSON (``/run``) or when an
    RFT job asks for structured output."""

    output_text: str
    output_json: Any = None
    output_tools: list[Any] = field(default_factory=list)
    choices: list[Any] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, *, parse_json: bool = True) -> Sample:
        message = {"role": "assistant", "content": text}
        return cls(
            output_text=text,
            output_json=_json_or_none(text) if parse_json else None,
            choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
        )

    @classmethod
    def from_message(
        cls, message: Mapping[str, Any], finish_reason: str = "stop", *, parse_json: bool = False
    ) -> Sample:
        """A chat completion's assistant ``message`` (with its ``tool_calls``, if any)."""
        text = message.get("content") or ""
        return cls(
            output_text=text,
            output_json=_json_or_none(text) if parse_json else None,
            output_tools=list(message.get("tool_calls") or []),
            choices=[{"index": 0, "message": dict(message), "finish_reason": finish_reason}],
        )

    def namespace(self) -> dict[str, Any]:
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools,
            "choices": self.choices,
            "output_audio": None,
        }


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        """OpenAI's ``token_usage`` object, key order as its example."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass(frozen=True)
class JudgeReply:
    text: str
    usage: TokenUsage
    finish_reason: str = "stop"
    refusal: str | None = None


class JudgeError(Exception):
    """The judge model could not answer (down, refused the request); the message says why."""


class Judge(Protocol):
    """The models graders consult, served by whoever runs the graders (OpenFT's engine)."""

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        sampling: SamplingParams | None,
    ) -> JudgeReply:
        """One chat completion of ``model`` (the name the grader gives) in ``response_format``."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of ``texts`` by the configured embedding model (``cosine``)."""
