"""The judge graders consult, served by OpenFT's own engine through the gateway port.

Model graders name OpenAI's models (``o4-mini``); ``OPENFT_GRADER_MODELS`` maps each to a local
base or ``ft:`` model, which answers on the caller's behalf (ownership, usage, cost and limits as
for any chat completion). Grading runs in worker threads; each judge call hops back to the event
loop the gateway lives on. ``cosine`` embeddings come from ``OPENFT_GRADER_EMBEDDINGS_URL``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from graders.config import SamplingParams
from graders.model_graders import chat_request, reply_of
from graders.samples import JudgeError, JudgeReply
from service.auth.principal import Principal
from service.errors import OpenFTError
from service.gateway import ModelGateway
from service.limits import RateLimiter, RateLimitError
from service.settings import Settings


def judge_model_problem(settings: Settings, model: str) -> str | None:
    """Why ``model`` cannot judge here, or None when it can."""
    if model in settings.grader_models or model in settings.base_models_by_name:
        return None
    if model.startswith("ft:"):
        return None  # the project's own fine-tuned model: ownership is checked when it is called
    return (
        f"The grader model '{model}' is not served here: map it to a local model in "
        'OPENFT_GRADER_MODELS (e.g. {"' + model + '": "<base or ft: model>"}) or name a '
        "local model."
    )


def embeddings_problem(settings: Settings) -> str | None:
    if settings.grader_embeddings_url and settings.grader_embedding_model:
        return None
    return (
        "The cosine metric needs an embedding model: set OPENFT_GRADER_EMBEDDINGS_URL and "
        "OPENFT_GRADER_EMBEDDING_MODEL (an OpenAI-compatible /embeddings server, e.g. vLLM)."
    )


class GatewayJudge:
    """``graders.samples.Judge`` for one caller, over the gateway on ``loop``."""

    def __init__(
        self,
        gateway: ModelGateway,
        limiter: RateLimiter,
        settings: Settings,
        principal: Principal,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.gateway = gateway
        self.limiter = limiter
        self.settings = settings
        self.principal = principal
        self.loop = loop

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        sampling: SamplingParams | None,
    ) -> JudgeReply:
        local = self.settings.grader_models.get(model, model)
        body = chat_request(local, messages, response_format, sampling)
        return reply_of(self._on_loop(self._complete(body)))

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.limiter.admit_tokens(self.principal, [body])
        try:
            return await self.gateway.completion(self.principal, body)
        except RateLimitError:
            raise
        except OpenFTError as error:
            raise JudgeError(f"{body['model']}: {error.message}") from error

    def _on_loop(self, work: Any) -> dict[str, Any]:
        result: dict[str, Any] = asyncio.run_coroutine_threadsafe(work, self.loop).result()
        return result

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        url = f"{(self.settings.grader_embeddings_url or '').rstrip('/')}/embeddings"
        body = {"model": self.settings.grader_embedding_model, "input": list(texts)}
        try:
            response = httpx.post(
                url, json=body, timeout=self.settings.vllm_request_timeout_seconds
            )
            response.raise_for_status()
            data = sorted(response.json()["data"], key=lambda row: row["index"])
        except (httpx.HTTPError, ValueError, KeyError) as error:
            raise JudgeError(f"embeddings from {url}: {error}") from error
        return [row["embedding"] for row in data]
