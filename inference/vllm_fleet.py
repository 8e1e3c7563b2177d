"""vLLM children run by the parent of several API processes (``openft serve --api-workers N``).

API processes reach these servers by URL, exactly as they reach external vLLM servers: they
watch their health, answer 503 while one is down, and load adapters it lacks on first use.
The parent only keeps the children alive; each keeps its port across restarts.
"""

from __future__ import annotations

import logging
import threading
import time

from inference.vllm_process import VLLMProcess, free_port
from service.settings import Settings

log = logging.getLogger(__name__)
WATCH_INTERVAL_S = 2.0
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 600.0  # a child that lived this long starts again without delay


class VLLMFleet:
    """One managed vLLM per base model that has no external URL."""

    def __init__(self, settings: Settings) -> None:
        self.processes = [
            VLLMProcess(model, settings)
            for model in settings.fine_tunable_models
            if model.name not in settings.vllm_urls
        ]
        for process in self.processes:
            process.port = free_port()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="vllm-fleet", daemon=True)

    def urls(self) -> dict[str, str]:
        """Base model name -> URL, for the API processes' ``OPENFT_VLLM_URLS``."""
        return {process.model.name: process.base_url for process in self.processes}

    def start(self) -> None:
        for process in self.processes:
            process.start()
        self._thread.start()

    def _keep_alive(self) -> None:
        """Restart dead children, waiting longer after each death that follows a short life."""
        delays = {id(process): WATCH_INTERVAL_S for process in self.processes}
        started = {id(process): time.monotonic() for process in self.processes}
        while not self._stopping.wait(WATCH_INTERVAL_S):
            for process in self.processes:
                if process.alive() or self._stopping.is_set():
                    continue
                key = id(process)
                if time.monotonic() - started[key] > STABLE_AFTER_S:
                    delays[key] = WATCH_INTERVAL_S
                log.error(
                    "vLLM for %s died; restarting it in %.0fs", process.model.name, delays[key]
                )
                if self._stopping.wait(delays[key]):
                    return
                process.start()
                started[key] = time.monotonic()
                delays[key] = min(delays[key] * 2, MAX_BACKOFF_S)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=WATCH_INTERVAL_S * 2)
        for process in self.processes:
            process.stop()
