"""The engine behind ``service.gateway.ModelGateway``: decide (model -> vLLM + adapter, loading),
then forward.

vLLM executes; the gateway checks that the caller's project owns an ``ft:`` model, loads its
adapter on first use, passes streams through chunk by chunk, and records usage, latency, cost and
drift through the service's accounting (metrics, usage rows, rate limits) after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from inference.adapters import AdapterLoader, AdapterRef
from inference.openai_shape import normalise
from inference.relay import SSERelay
from inference.token_drift import TokenDriftCounter
from inference.upstreams import Upstream, Upstreams
from inference.vllm_client import ReadAnswer, UpstreamResponse, VLLMClient
from service.auth.principal import Principal
from service.blobstore import BlobStore
from service.db.database import Database
from service.drift import PromptProfile, request_texts
from service.errors import (
    InvalidRequestError,
    NotFoundError,
    OpenFTError,
    ServiceUnavailableError,
)
from service.gateway import DeletedModel, ServerStatus
from service.jobs import repository
from service.limits import RateLimiter, estimated_tokens
from service.metrics import Metrics
from service.settings import Settings
from service.usage import UsageWriter

log = logging.getLogger(__name__)
RETRY_AFTER_S = "5"


def model_not_found(model: str) -> NotFoundError:
    return NotFoundError(
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    adapter: AdapterRef | None


class Gateway:
    def __init__(
        self,
        db: Database,
        upstreams: Upstreams,
        adapters: AdapterLoader,
        vllm: VLLMClient,
        metrics: Metrics,
        token_drift: TokenDriftCounter | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        """``token_drift``: where prompts go to be tokenized for drift (None: drift is off);
        ``limiter``: corrects a key's tokens per minute to what a request really used."""
        self.db = db
        self.upstreams = upstreams
        self.adapters = adapters
        self.vllm = vllm
        self.metrics = metrics
        self.token_drift = token_drift
        self.limiter = limiter
        self.usage = UsageWriter(db)
        self._profiles: dict[str, PromptProfile | None] = {}
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def open(
        cls,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        metrics: Metrics,
        limiter: RateLimiter,
        *,
        spawn_vllm: bool,
    ) -> Gateway:
        """The gateway of an API process over its database, blob store and accounting;
        ``spawn_vllm`` runs a vLLM child per base model without an external URL."""
        vllm = VLLMClient.open(settings)
        upstreams = Upstreams(settings, vllm, spawn=spawn_vllm, metrics=metrics)
        adapters = AdapterLoader(
            blobs, settings.data_dir / "adapters", vllm,
            pulled_by_vllm=settings.vllm_adapters_from_blobs,
        )  # fmt: skip
        token_drift = TokenDriftCounter(metrics) if settings.drift_enabled else None
        return cls(db, upstreams, adapters, vllm, metrics, token_drift, limiter)

    async def start(self) -> None:
        await self.upstreams.start()

    async def aclose(self) -> None:
        await self.drain()
        await self.usage.aclose()
        await self.upstreams.stop()
        if self.token_drift is not None:
            await run_in_threadpool(self.token_drift.stop)
        await self.vllm.aclose()

    def status(self) -> dict[str, ServerStatus]:
        return self.upstreams.status()

    async def forward(self, principal: Principal, path: str, body: dict[str, Any]) -> Response:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError(
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        target = await self._target(principal, model)
        upstream = target.upstream
        self.metrics.upstream_requests.labels(upstream.model.name, upstream.base_url).inc()
        upstream.in_flight += 1
        streaming = False
        try:
            if target.adapter is not None:
                await self._ensure_loaded(target)
            if body.get("stream"):
                response = await self._stream(target, principal, path, body, model)
                streaming = True  # the stream's end counts it out
                return response
            return await self._complete(target, principal, path, body, model)
        except OpenFTError as exc:
            base = target.upstream.model.name
            self.metrics.failed(
                model=model, base_model=base, project=principal.project_slug, status=exc.status_code
            )
            raise
        finally:
            if not streaming:
                target.upstream.in_flight -= 1

    async def completion(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.forward(principal, "/v1/chat/completions", {**body, "stream": False})
        answer: dict[str, Any] = orjson.loads(response.body)
        return answer

    async def completion_chunks(
        self, principal: Principal, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        streamed = {**body, "stream": True, "stream_options": options}
        response = await self.forward(principal, "/v1/chat/completions", streamed)
        assert isinstance(response, StreamingResponse)
        return _chunks(response.body_iterator)

    async def count_tokens(self, principal: Principal, body: dict[str, Any]) -> int:
        model = str(body.get("model") or "")
        target = await self._target(principal, model)  # the project's to call, or a 404
        # An adapter does not change the tokenizer: the base model's server counts.
        asked = {
            "model": target.upstream.model.name,
            "messages": body["messages"],
            "add_generation_prompt": True,
        }
        if body.get("tools"):
            asked["tools"] = body["tools"]
        response = await self._send(target, "/tokenize", asked)
        content = await response.aread()
        await response.aclose()
        if response.status_code >= 400:
            raise _upstream_error(response, target, model)
        return int(orjson.loads(content)["count"])

    async def load(self, principal: Principal, model: str) -> str:
        target = await self._target(principal, model)
        if target.adapter is not None:
            await self._ensure_loaded(target)
        return target.upstream.model.name

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping after the answer; kept referenced until done (asyncio holds tasks
        weakly)."""
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the bookkeeping still running (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def usage_written(self) -> None:
        await self.usage.flush()

    async def unload(self, model: DeletedModel) -> None:
        """A deleted model: drop it and its checkpoints from vLLM (best effort), remove its
        published folder, and forget it here (metrics, cached profile, load locks)."""
        for upstream in self.upstreams.replicas(model.base_model):
            if not upstream.ready:
                continue
            for name in model.names:
                with contextlib.suppress(httpx.TransportError):
                    await self.adapters.unload(upstream, name)
        await run_in_threadpool(self.adapters.unpublish, model.job_id)
        for name in model.names:
            self.metrics.forget(name)
            self._profiles.pop(name, None)
            self.adapters.forget(name)

    async def _target(self, principal: Principal, model: str) -> Target:
        if not model.startswith("ft:"):
            upstream = self.upstreams.pick(model, model)
            if upstream is None:
                raise model_not_found(model)
            return self._ready(Target(upstream, None))
        job = await run_in_threadpool(self._owned_job, principal, model)
        if job is None or (upstream := self.upstreams.pick(job.base_model, model)) is None:
            raise model_not_found(model)
        return self._ready(Target(upstream, job))

    def _owned_job(self, principal: Principal, model: str) -> AdapterRef | None:
        """The project's fine-tuned model or checkpoint called ``model``, if any."""
        with self.db.read() as session:
            found = repository.usable_adapter(session, principal.project_id, model)
        if found is None:
            return None
        return AdapterRef(model, found.job_id, found.base_model, found.variant)

    @staticmethod
    def _ready(target: Target) -> Target:
        upstream = target.upstream
        if upstream.process is None and not upstream.base_url:
            raise ServiceUnavailableError(
                f"The model {upstream.model.name} is not served by this OpenFT node "
                "(started with --no-vllm and no OPENFT_VLLM_URLS entry)."
            )
        if not upstream.ready:
            raise ServiceUnavailableError(
                f"The model server for {target.upstream.model.name} is starting; retry shortly.",
                headers={"retry-after": RETRY_AFTER_S},
            )
        return target

    async def _ensure_loaded(self, target: Target, *, refresh: bool = False) -> None:
        assert target.adapter is not None
        try:
            await self.adapters.ensure(target.upstream, target.adapter, refresh=refresh)
        except httpx.TransportError as exc:
            log.error("loading %s into vLLM failed: %r", target.adapter.name, exc)
            raise _unavailable(target, exc) from exc

    async def _send(self, target: Target, path: str, body: dict[str, Any]) -> UpstreamResponse:
        try:
            return await self.vllm.send(target.upstream.base_url, path, body)
        except httpx.TransportError as exc:
            log.error("forwarding to vLLM for %s failed: %r", target.upstream.model.name, exc)
            raise _unavailable(target, exc) from exc

    async def _send_loaded(
        self, target: Target, path: str, body: dict[str, Any]
    ) -> UpstreamResponse:
        """Send; if vLLM lost the adapter (restart, eviction), load it again and retry once."""
        response = await self._send(target, path, body)
        if response.status_code == 404 and target.adapter is not None:
            await response.aclose()
            await self._ensure_loaded(target, refresh=True)
            response = await self._send(target, path, body)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _upstream_error(response, target, body.get("model", ""))
        return response

    async def _complete(
        self, target: Target, principal: Principal, path: str, body: dict[str, Any], model: str
    ) -> Response:
        started = time.perf_counter()
        response = await self._send_loaded(target, path, body)
        content = await response.aread()
        await response.aclose()
        payload = normalise(orjson.loads(content))
        elapsed = time.perf_counter() - started
        self._record(target, principal, body, model, payload.get("usage"), elapsed, elapsed)
        return JSONResponse(payload, status_code=response.status_code)

    def _record(
        self,
        target: Target,
        principal: Principal,
        body: dict[str, Any],
        model: str,
        usage: dict[str, Any] | None,
        first_token_s: float,
        total_s: float,
    ) -> None:
        """Count a served request without I/O on its path: Prometheus at once, the durable
        hourly usage row queued for ``UsageWriter``; a tokens-per-minute key's correction and
        (for ``ft:`` models) the prompt's drift follow in the background."""
        try:
            prompt, completion = self.metrics.served(
                model=model,
                base=target.upstream.model,
                project=principal.project_slug,
                usage=usage,
                first_token_s=first_token_s,
                total_s=total_s,
            )
            self.usage.add(
                project_id=principal.project_id,
                model=model,
                base_model=target.upstream.model.name,
                prompt=prompt,
                completion=completion,
            )
        except Exception:  # the answer is on its way; never fail it over bookkeeping
            log.exception("could not count a request to %s", model)
            return
        # The estimate was charged up front; now the tokens really used are known.
        limited = self.limiter is not None and self.limiter.counts_tokens(principal)
        correction = prompt + completion - estimated_tokens(body) if limited and usage else 0
        drift = target.adapter is not None and self.token_drift is not None
        if correction or drift:
            self._in_background(
                self._record_after(target, principal, body, model, prompt, correction)
            )

    async def _record_after(
        self,
        target: Target,
        principal: Principal,
        body: dict[str, Any],
        model: str,
        prompt: int,
        correction: int,
    ) -> None:
        """A request's bookkeeping that reads or writes the database: the key's token
        correction, and the prompt against the training data's profile."""
        try:
            if self.limiter is not None and correction:
                await run_in_threadpool(self.limiter.charge, principal, correction)
            if target.adapter is not None and self.token_drift is not None:
                profile = await self._profile(principal, model)
                if profile is not None:
                    self.metrics.prompt_seen(model, profile, prompt)
                if profile is not None and profile.tokens is not None:
                    texts = request_texts(body)
                    self.token_drift.offer(model, target.upstream.model, profile.tokens, texts)
        except Exception:  # the answer is already on its way; never fail it over bookkeeping
            log.exception("could not record usage of %s", model)

    async def _profile(self, principal: Principal, model: str) -> PromptProfile | None:
        """The model's training prompt profile, read once (it never changes)."""
        if model not in self._profiles:
            self._profiles[model] = await run_in_threadpool(self._read_profile, principal, model)
        return self._profiles[model]

    def _read_profile(self, principal: Principal, model: str) -> PromptProfile | None:
        with self.db.read() as session:
            data = repository.prompt_profile_of(session, principal.project_id, model)
        return PromptProfile.from_dict(data) if data else None

    async def _stream(
        self, target: Target, principal: Principal, path: str, body: dict[str, Any], model: str
    ) -> Response:
        options = body.get("stream_options") or {}
        client_wants_usage = bool(options.get("include_usage"))
        upstream_body = {**body, "stream_options": {**options, "include_usage": True}}
        started = time.perf_counter()
        response = await self._send_loaded(target, path, upstream_body)
        relay = SSERelay(response, client_wants_usage)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in relay:
                    yield chunk
            finally:  # also on client disconnect: closing aborts the upstream request
                target.upstream.in_flight -= 1
                await response.aclose()
                total = time.perf_counter() - started
                first = relay.first_chunk_at - started if relay.first_chunk_at else total
                self._record(target, principal, body, model, relay.usage, first, total)

        return StreamingResponse(chunks(), media_type="text/event-stream")


async def _chunks(events: AsyncIterable[str | bytes | memoryview]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of relayed server-sent events; closing it closes the relay (which counts)."""
    try:
        async for event in events:
            data = event.encode() if isinstance(event, str) else bytes(event)
            for line in data.splitlines():
                if line.startswith(b"data: {"):
                    yield orjson.loads(line[6:])
    finally:  # also when the caller stops early: the relay's own finally records the usage
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _unavailable(target: Target, exc: httpx.TransportError) -> ServiceUnavailableError:
    process = target.upstream.process
    refused = process is None and isinstance(exc, httpx.ConnectError)
    # A dead child, or an external replica that refuses connections: out of the routing until
    # its watcher sees it answer again (seconds).
    if refused or (process is not None and not process.alive()):
        target.upstream.reset()
    return ServiceUnavailableError(
        f"The model server for {target.upstream.model.name} is not reachable; retry shortly.",
        headers={"retry-after": RETRY_AFTER_S},
    )


def _upstream_error(response: ReadAnswer, target: Target, model: str) -> Exception:
    """vLLM's errors in OpenAI's envelope; model errors become model_not_found (no paths leak)."""
    if response.status_code == 404:
        return model_not_found(model)
    if response.status_code >= 500:
        log.error(
            "vLLM for %s answered %d: %s",
            target.upstream.model.name,
            response.status_code,
            response.text[:2000],
        )
        return ServiceUnavailableError(
            f"The model server for {target.upstream.model.name} failed to answer "
            f"(HTTP {response.status_code}); retry shortly.",
            headers={"retry-after": RETRY_AFTER_S},
        )
    try:
        message = str(orjson.loads(response.content)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = response.text[:500]
    return InvalidRequestError(message, status_code=response.status_code)
