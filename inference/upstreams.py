"""The vLLM server behind each base model: a managed child process or an external URL, brought up
in the background and watched (a dead child is restarted; what each server holds is noted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import httpx
from starlette.concurrency import run_in_threadpool

from inference.vllm_client import VLLMClient
from inference.vllm_process import VLLMProcess
from service.gateway import ServerStatus
from service.settings import BaseModelConfig, Settings

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 2.0
READY_POLL_S = 0.5


@dataclass
class Upstream:
    model: BaseModelConfig
    base_url: str = ""
    process: VLLMProcess | None = None
    ready: bool = False
    loaded: set[str] = field(default_factory=set)  # adapters this process knows it loaded
    listed_adapters: int | None = None  # adapters the server listed at the watcher's last look

    def reset(self) -> None:
        self.ready = False
        self.loaded.clear()
        self.listed_adapters = None


class Upstreams:
    """Starts, watches and restarts the vLLM servers; never blocks the API while they boot."""

    def __init__(self, settings: Settings, vllm: VLLMClient, *, spawn: bool) -> None:
        """``spawn``: run a vLLM child for each model without an external URL (else not served)."""
        self.settings = settings
        self.vllm = vllm
        self._upstreams: dict[str, Upstream] = {}
        for model in settings.fine_tunable_models:
            url = settings.vllm_urls.get(model.name)
            process = VLLMProcess(model, settings) if spawn and not url else None
            self._upstreams[model.name] = Upstream(model, url or "", process)
        self._tasks: list[asyncio.Task[None]] = []

    def get(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    def status(self) -> dict[str, ServerStatus]:
        return {
            name: ServerStatus(upstream.ready, upstream.listed_adapters if upstream.ready else None)
            for name, upstream in self._upstreams.items()
        }

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
            elif upstream.ready or upstream.process is None:
                await self._look(upstream)

    async def _look(self, upstream: Upstream) -> None:
        """Note what the server holds; an external server that does not answer is not ready
        (a managed child's liveness is its process's)."""
        try:
            served = await self.vllm.served_models(upstream.base_url)
        except (httpx.TransportError, httpx.HTTPStatusError, ValueError):
            if upstream.process is None:
                upstream.ready = False
            return
        upstream.ready = True
        upstream.listed_adapters = sum(1 for name in served if name != upstream.model.name)

    async def _bring_up(self, upstream: Upstream) -> None:
        process = upstream.process
        if process is None:
            upstream.ready = await self.vllm.healthy(upstream.base_url)
            return
        # On this (the event loop's) thread, not a pool thread: the child's parent-death signal
        # fires when the thread that started it ends, and idle pool threads end after seconds.
        process.start()
        upstream.base_url = process.base_url
        if await self._wait_ready(process, self.settings.vllm_start_timeout_seconds):
            upstream.ready = True
            log.info("vLLM for %s is ready at %s", upstream.model.name, upstream.base_url)
        else:
            log.error(
                "vLLM for %s did not become ready; see %s", upstream.model.name, process.logfile
            )
            await run_in_threadpool(process.stop)

    async def _wait_ready(self, process: VLLMProcess, timeout_s: float) -> bool:
        """Poll the child's health until it answers, it dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.alive():
            if await self.vllm.healthy(process.base_url):
                return True
            await asyncio.sleep(READY_POLL_S)
        return False
