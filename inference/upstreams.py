"""The vLLM server behind each base model: a managed child process or an external URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import httpx
from starlette.concurrency import run_in_threadpool

from inference.vllm_process import VLLMProcess
from service.settings import BaseModelConfig, Settings

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 2.0


@dataclass
class Upstream:
    model: BaseModelConfig
    base_url: str = ""
    process: VLLMProcess | None = None
    ready: bool = False
    loaded: set[str] = field(default_factory=set)

    def reset(self) -> None:
        self.ready = False
        self.loaded.clear()


class Upstreams:
    """Starts, watches and restarts the vLLM servers; never blocks the API while they boot."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient, *, spawn: bool) -> None:
        """``spawn``: run a vLLM child for each model without an external URL (else not served)."""
        self.settings = settings
        self.client = client
        self._upstreams: dict[str, Upstream] = {}
        for model in settings.fine_tunable_models:
            url = settings.vllm_urls.get(model.name)
            process = VLLMProcess(model, settings) if spawn and not url else None
            self._upstreams[model.name] = Upstream(model, url or "", process)
        self._tasks: list[asyncio.Task[None]] = []

    def get(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    def status(self) -> dict[str, str]:
        return {n: "ready" if u.ready else "starting" for n, u in self._upstreams.items()}

    def listed_adapters(self) -> dict[str, int]:
        """Per ready base model, the adapters its vLLM lists (blocking; for metric scrapes).

        vLLM's list is the truth whichever API process or replica loaded an adapter.
        """
        counts: dict[str, int] = {}
        for name, upstream in self._upstreams.items():
            if not upstream.ready:
                continue
            try:
                response = httpx.get(
                    f"{upstream.base_url}/v1/models", headers=self.client.headers, timeout=2
                )
                response.raise_for_status()
            except httpx.HTTPError:
                continue
            cards = response.json().get("data", [])
            counts[name] = sum(1 for card in cards if card.get("id") != name)
        return counts

    async def start(self) -> None:
        for upstream in self._upstreams.values():
            if upstream.process is None and not upstream.base_url:
                continue  # not served by this node
            self._tasks.append(asyncio.create_task(self._keep_serving(upstream)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for upstream in self._upstreams.values():
            if upstream.process is not None:
                await run_in_threadpool(upstream.process.stop)

    async def _keep_serving(self, upstream: Upstream) -> None:
        """Bring the upstream up, then watch it; a dead child is restarted."""
        while True:
            if not upstream.ready:
                await self._bring_up(upstream)
            await asyncio.sleep(WATCH_INTERVAL_S)
            if upstream.process is not None and not upstream.process.alive():
                log.error("vLLM for %s died; restarting it", upstream.model.name)
                upstream.reset()
            elif upstream.process is None:
                upstream.ready = await self._healthy(upstream)

    async def _bring_up(self, upstream: Upstream) -> None:
        process = upstream.process
        if process is None:
            upstream.ready = await self._healthy(upstream)
            return
        # On this (the event loop's) thread, not a pool thread: the child's parent-death signal
        # fires when the thread that started it ends, and idle pool threads end after seconds.
        process.start()
        upstream.base_url = process.base_url
        timeout = self.settings.vllm_start_timeout_seconds
        if await run_in_threadpool(process.wait_ready, timeout):
            upstream.ready = True
            log.info("vLLM for %s is ready at %s", upstream.model.name, upstream.base_url)
        else:
            log.error(
                "vLLM for %s did not become ready; see %s", upstream.model.name, process.logfile
            )
            await run_in_threadpool(process.stop)

    async def _healthy(self, upstream: Upstream) -> bool:
        try:
            response = await self.client.get(f"{upstream.base_url}/health", timeout=5)
        except httpx.TransportError:
            return False
        return response.status_code == 200
