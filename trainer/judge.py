"""The judge RFT jobs' model graders consult: the vLLM server of a base model, over HTTP.

The worker meets the engine only through settings: ``OPENFT_GRADER_MODELS`` maps the grader's
model name to a base model, and ``OPENFT_VLLM_URLS`` says where that base model is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from graders.config import SamplingParams
from graders.model_graders import chat_request, reply_of
from graders.samples import JudgeError, JudgeReply

JUDGE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class HttpJudge:
    """``graders.samples.Judge`` over OpenAI-compatible servers: ``judges`` maps a grader's
    model name to (the server's ``/v1`` URL, the model name it serves)."""

    judges: Mapping[str, tuple[str, str]]
    embeddings: tuple[str, str] | None = None
    api_key: str | None = None

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        sampling: SamplingParams | None,
    ) -> JudgeReply:
        if model not in self.judges:
            raise JudgeError(f"{model}: no served base model judges for it in training")
        url, local = self.judges[model]
        body = chat_request(local, messages, response_format, sampling)
        return reply_of(self._post(f"{url}/chat/completions", body))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.embeddings is None:
            raise JudgeError("no embedding model is configured")
        url, model = self.embeddings
        found = self._post(f"{url}/embeddings", {"model": model, "input": list(texts)})
        return [row["embedding"] for row in sorted(found["data"], key=lambda r: r["index"])]

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=JUDGE_TIMEOUT_S)
            response.raise_for_status()
            found: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise JudgeError(f"{url}: {error}") from error
        return found
