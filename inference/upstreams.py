"""The vLLM servers behind each base model: a managed child process, or one or more external
replicas, brought up in the background and watched (a dead child is restarted; a replica that
stops answering leaves the routing until it answers again; what each server holds is noted).

Requests pick a replica by rendezvous hashing on the model they name, so each ``ft:`` model stays
on one replica (its adapter loaded once, warm), with bounded load: a replica holding more than
``LOAD_FACTOR`` times its share of the requests in flight spills the next one to the model's
second choice. A replica's load is this process's requests at it now plus the other API
processes' (and any other client's), read from the replica's own running and waiting gauges at
each look (every ``WATCH_INTERVAL_S``), less this process's share at that moment.

A replica URL written ``dns+http://NAME:PORT`` stands for every address ``NAME`` resolves to (a
Kubernetes headless Service: one per ready pod), looked up again every ``WATCH_INTERVAL_S``: a new
pod joins the ring, a gone one leaves it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from starlette.concurrency import run_in_threadpool

from inference.vllm_client import VLLMClient
from inference.vllm_process import VLLMProcess
from service.gateway import ServerStatus
from service.metrics import Metrics
from service.settings import BaseModelConfig, Settings

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 2.0
READY_POLL_S = 0.5
LOAD_FACTOR = 1.25  # bounded load: at most this times a replica's share of the requests in flight
DNS_SCHEME = "dns+"
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass
class Upstream:
    model: BaseModelConfig
    base_url: str = ""
    process: VLLMProcess | None = None
    ready: bool = False
    loaded: set[str] = field(default_factory=set)  # adapters this process knows it loaded
    listed_adapters: int | None = None  # adapters the server listed at the watcher's last look
    in_flight: int = 0  # requests this API process has at this server now
    others_in_flight: int = 0  # everyone else's, from the server's own gauges at the last look
    discovered_by: str | None = None  # the dns+ URL whose name resolved to this replica

    @property
    def load(self) -> int:
        return self.in_flight + self.others_in_flight

    def reset(self) -> None:
        self.ready = False
        self.others_in_flight = 0
        self.loaded.clear()
        self.listed_adapters = None


class Upstreams:
    """Starts, watches and restarts the vLLM servers; never blocks the API while they boot."""

    def __init__(
        self,
        settings: Settings,
        vllm: VLLMClient,
        *,
        spawn: bool,
        metrics: Metrics | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        """``spawn``: run a vLLM child for each model without an external URL (else not served);
        ``metrics``: where each replica's readiness is published; ``resolve``: a name and port's
        addresses (the system's resolver unless given)."""
        self.settings = settings
        self.vllm = vllm
        self.metrics = metrics
        self.resolve = resolve or _addresses
        self._replicas: dict[str, list[Upstream]] = {}
        self._discovered: list[tuple[BaseModelConfig, str]] = []
        for model in settings.fine_tunable_models:
            urls = settings.vllm_replicas(model.name)
            if urls:
                self._discovered += [(model, url) for url in urls if url.startswith(DNS_SCHEME)]
                # A dns+ URL holds the place of its replicas until its name resolves.
                self._replicas[model.name] = [Upstream(model, url) for url in urls]
            else:
                process = VLLMProcess(model, settings) if spawn else None
                self._replicas[model.name] = [Upstream(model, "", process)]
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: dict[int, asyncio.Task[None]] = {}

    def serves(self, name: str) -> bool:
        return name in self._replicas

    def replicas(self, name: str) -> list[Upstream]:
        """Every server of base model ``name`` (ready or not)."""
        return list(self._replicas.get(name, ()))

    def pick(self, name: str, key: str) -> Upstream | None:
        """The server of base model ``name`` for a request naming model ``key``: the ready
        replica that ranks ``key`` highest and is under its bounded load; with none ready, the
        first (whose state then says why it cannot answer); None for an unknown model."""
        replicas = self._replicas.get(name)
        if not replicas:
            return None
        ready = [upstream for upstream in replicas if upstream.ready]
        if len(ready) <= 1:
            return ready[0] if ready else replicas[0]
        ranked = sorted(ready, key=lambda upstream: _rank(key, upstream.base_url), reverse=True)
        total = sum(upstream.load for upstream in ready) + 1
        bound = math.ceil(LOAD_FACTOR * total / len(ready))
        return next((u for u in ranked if u.load < bound), ranked[0])

    def status(self) -> dict[str, ServerStatus]:
        """Per base model: ready while any replica is; the adapters the ready ones listed."""
        statuses = {}
        for name, replicas in self._replicas.items():
            ready = [upstream for upstream in replicas if upstream.ready]
            listed = [u.listed_adapters for u in ready if u.listed_adapters is not None]
            statuses[name] = ServerStatus(
                bool(ready),
                sum(listed) if listed else None,
                replicas=tuple((u.base_url, u.ready) for u in replicas if u.base_url),
            )
        return statuses

    async def start(self) -> None:
        for replicas in self._replicas.values():
            for upstream in replicas:
                if upstream.process is None and not upstream.base_url:
                    continue  # not served by this node
                if not upstream.base_url.startswith(DNS_SCHEME):
                    self._watch(upstream)
        if self._discovered:
            self._tasks.append(asyncio.create_task(self._keep_resolving()))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._watchers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for replicas in self._replicas.values():
            for upstream in replicas:
                if upstream.process is not None:
                    await run_in_threadpool(upstream.process.stop)

    def _watch(self, upstream: Upstream) -> None:
        self._watchers[id(upstream)] = asyncio.create_task(self._keep_serving(upstream))

    async def _keep_resolving(self) -> None:
        while True:
            await self.resolve_names()
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def resolve_names(self) -> None:
        """Make each ``dns+`` URL's replicas those its name resolves to now."""
        for model, url in self._discovered:
            template = httpx.URL(url.removeprefix(DNS_SCHEME))
            port = template.port or (443 if template.scheme == "https" else 80)
            try:
                addresses = await self.resolve(template.host, port)
            except OSError as exc:  # keep what we have: a resolver hiccup is not a dead pod
                log.warning("could not resolve %s for %s: %r", template.host, model.name, exc)
                continue
            urls = [str(template.copy_with(host=address)) for address in addresses]
            self._resolved(model, url, urls)

    def _resolved(self, model: BaseModelConfig, name: str, urls: list[str]) -> None:
        """Replace the replicas ``name`` resolved to with ``urls``: new ones start being watched,
        gone ones stop (and leave the ring); with none, ``name`` holds their place (not ready)."""
        current = self._replicas[model.name]
        ours = [u for u in current if u.discovered_by == name or u.base_url == name]
        kept = [u for u in ours if u.base_url in urls]
        known = {u.base_url for u in kept}
        added = [Upstream(model, url, discovered_by=name) for url in urls if url not in known]
        if not kept and not added:
            kept = [u for u in ours if u.base_url == name] or [Upstream(model, name)]
        others = [u for u in current if u not in ours]
        self._replicas[model.name] = others + kept + added
        for upstream in ours:
            if upstream not in kept and upstream.base_url != name:
                log.info("vLLM replica %s of %s is gone", upstream.base_url, model.name)
                self._unwatch(upstream)
        for upstream in added:
            log.info("vLLM replica %s of %s found (%s)", upstream.base_url, model.name, name)
            self._watch(upstream)

    def _unwatch(self, upstream: Upstream) -> None:
        upstream.reset()
        task = self._watchers.pop(id(upstream), None)
        if task is not None:
            task.cancel()
        if self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.upstream_ready.remove(upstream.model.name, upstream.base_url)

    async def _keep_serving(self, upstream: Upstream) -> None:
        """Bring the upstream up, then watch it; a dead child is restarted."""
        while True:
            if not upstream.ready:
                await self._bring_up(upstream)
            if self.metrics is not None and upstream.base_url:
                gauge = self.metrics.upstream_ready.labels(upstream.model.name, upstream.base_url)
                gauge.set(1 if upstream.ready else 0)
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
        mine = upstream.in_flight
        depth = await self.vllm.queue_depth(upstream.base_url)
        upstream.others_in_flight = max(0, depth - min(mine, upstream.in_flight)) if depth else 0

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


async def _addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in a stable order."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def _rank(key: str, url: str) -> int:
    """Rendezvous hashing: each (model, replica) pair's score; the model goes to the highest."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest())
