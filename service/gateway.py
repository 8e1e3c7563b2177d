"""The port to the model-serving engine: what the API asks of whatever serves models.

Routes reach it through one dependency (``service.deps.ModelGateway``); ``create_app`` puts the
engine behind it (``inference/``: vLLM servers, adapters hot-loaded from the blob store). The
engine decides what a request may reach: a base model anyone may call, or an ``ft:`` model or
checkpoint of the caller's project (another project's is a 404, as if it did not exist).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response

from service.auth.principal import Principal


@dataclass(frozen=True)
class DeletedModel:
    """A fine-tuned model that was just deleted, with the checkpoints that went with it."""

    name: str
    job_id: str
    base_model: str
    checkpoints: tuple[str, ...] = ()  # names of the job's checkpoints, gone with it

    @property
    def names(self) -> tuple[str, ...]:
        """Every servable name that went: the model and its checkpoints."""
        return (self.name, *self.checkpoints)


@dataclass(frozen=True)
class ServerStatus:
    """One base model's model server, as the engine last saw it."""

    ready: bool
    # Adapters the server listed at its last look; None until it has been looked at.
    adapters: int | None = None
    # Each external replica's URL and whether it answers (empty for a managed child).
    replicas: tuple[tuple[str, bool], ...] = ()


class ModelGateway(Protocol):
    async def start(self) -> None:
        """Bring the model servers up in the background (the API answers at once)."""

    async def aclose(self) -> None:
        """Finish the bookkeeping under way and stop the model servers this process runs."""

    async def forward(self, principal: Principal, path: str, body: dict[str, Any]) -> Response:
        """Serve OpenAI's request ``body`` for ``path`` (``/v1/chat/completions`` or
        ``/v1/completions``): JSON, or server-sent events when ``stream`` is set. Tokens per
        minute are the caller's to admit first (``RateLimiter.admit_tokens``)."""

    async def completion(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """A chat completion as data, for OpenFT's own features, on a client request's path
        (ownership, loading, usage and metrics); its tokens were admitted by the caller."""

    async def completion_chunks(
        self, principal: Principal, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion as its chunks (the last holds ``usage``), on a client
        request's path; errors before the first chunk are raised here, not in the iterator."""

    async def usage_written(self) -> None:
        """Wait until the usage rows of the requests answered so far are written (they are
        written off the requests' path, shortly after each answer)."""

    async def count_tokens(self, principal: Principal, body: dict[str, Any]) -> int:
        """The prompt tokens of a chat request (``model``, ``messages``, ``tools``) as its model's
        server renders them, chat template included; nothing is generated or counted as usage."""

    async def load(self, principal: Principal, model: str) -> str:
        """Have ``model`` ready to answer (its server up, its adapter loaded); its base model's
        name. 404 for a model the project cannot call, 503 while its server is down."""

    async def unload(self, model: DeletedModel) -> None:
        """A deleted model stops being served and leaves nothing behind in the engine."""

    def status(self) -> dict[str, ServerStatus]:
        """Per base model, its server as last seen (never asks the servers: cheap)."""
