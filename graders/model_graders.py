"""The ``score_model`` and ``label_model`` graders: a judge model answers in a fixed JSON shape.

As OpenAI does, the judge is asked for ``{"result": ..., "steps": [{"description", "conclusion"}]}``
through structured output: a number clamped to the grader's ``range`` (score_model) or one of its
``labels``, worth 1 when among ``passing_labels`` (label_model). ``result`` comes first so a small
judge that runs out of tokens while explaining has still given its verdict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graders import templates
from graders.config import LabelModelGrader, SamplingParams, ScoreModelGrader, TextPart
from graders.samples import Judge, JudgeError, JudgeReply, TokenUsage

_STEPS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
        "required": ["description", "conclusion"],
        "additionalProperties": False,
    },
}
JUDGE_MAX_TOKENS = 512  # when the grader sets no max_completions_tokens
_RESULT = re.compile(r'"result"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


@dataclass(frozen=True)
class Verdict:
    """A judge's answer: the reward, or which of OpenAI's error flags it raised."""

    reward: float
    usage: TokenUsage
    error: str | None = None  # model_grader_server_error, _refusal_error or _parse_error
    details: str | None = None


def judge_messages(
    grader: ScoreModelGrader | LabelModelGrader, namespaces: Mapping[str, Any]
) -> list[dict[str, str]]:
    """The grader's ``input`` rendered (TemplateError for a missing variable). ``developer``
    becomes ``system``: local chat templates know that one."""
    messages = []
    for message in grader.input:
        text = "".join(
            templates.render(part.text, namespaces)
            for part in message.parts()
            if isinstance(part, TextPart)
        )
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": text})
    return messages


def response_format(grader: ScoreModelGrader | LabelModelGrader) -> dict[str, Any]:
    result: dict[str, Any]
    if isinstance(grader, ScoreModelGrader):
        result = {"type": "number"}
    else:
        result = {"type": "string", "enum": grader.labels}
    schema = {
        "type": "object",
        "properties": {"result": result, "steps": _STEPS},
        "required": ["result", "steps"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "grade", "strict": True, "schema": schema},
    }


def chat_request(
    model: str,
    messages: list[dict[str, str]],
    response_format: dict[str, Any],
    sampling: SamplingParams | None,
) -> dict[str, Any]:
    """The chat completion request a judge sends for a grader: greedy unless the grader's
    ``sampling_params`` say otherwise (``reasoning_effort`` has no local meaning)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "response_format": response_format,
        "max_tokens": JUDGE_MAX_TOKENS,
        "temperature": 0,
    }
    if sampling is not None:
        for name in ("temperature", "top_p", "seed"):
            if getattr(sampling, name) is not None:
                body[name] = getattr(sampling, name)
        if sampling.max_completions_tokens is not None:
            body["max_tokens"] = sampling.max_completions_tokens
    return body


def reply_of(completion: dict[str, Any]) -> JudgeReply:
    """A chat completion's answer and usage, as the judge port returns them."""
    choice = completion["choices"][0]
    usage = completion.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return JudgeReply(
        text=choice["message"].get("content") or "",
        usage=TokenUsage(
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            cached_tokens=details.get("cached_tokens") or 0,
        ),
        finish_reason=choice.get("finish_reason") or "stop",
        refusal=choice["message"].get("refusal"),
    )


def judge(
    grader: ScoreModelGrader | LabelModelGrader, namespaces: Mapping[str, Any], judge: Judge
) -> Verdict:
    messages = judge_messages(grader, namespaces)
    sampling = grader.sampling_params if isinstance(grader, ScoreModelGrader) else None
    try:
        reply = judge.chat(grader.model, messages, response_format(grader), sampling)
    except JudgeError as error:
        return Verdict(0.0, TokenUsage(), "model_grader_server_error", str(error))
    if reply.refusal:
        return Verdict(0.0, reply.usage, "model_grader_refusal_error", reply.refusal)
    result = _result(reply.text)
    if isinstance(grader, ScoreModelGrader):
        if (
            not isinstance(result, int | float)
            or isinstance(result, bool)
            or not math.isfinite(result)
        ):
            return Verdict(0.0, reply.usage, "model_grader_parse_error", reply.text[:500])
        low, high = grader.bounds
        return Verdict(min(max(float(result), low), high), reply.usage)
    if result not in grader.labels:
        return Verdict(0.0, reply.usage, "model_grader_parse_error", reply.text[:500])
    return Verdict(1.0 if result in grader.passing_labels else 0.0, reply.usage)


def _result(text: str) -> Any:
    try:
        answer = json.loads(text)
        if isinstance(answer, dict) and "result" in answer:
            return answer["result"]
    except ValueError:
        pass
    found = _RESULT.search(text)  # an answer cut off by the token limit after its result
    if found is None:
        return None
    return json.loads(found.group(1))
