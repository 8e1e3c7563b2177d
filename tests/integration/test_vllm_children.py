"""Managed children outlive the threads around them: the parent-death signal is per thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from inference.upstreams import Upstreams
from inference.vllm_client import VLLMClient
from inference.vllm_process import VLLMProcess
from service.settings import Settings
from service.supervisor import die_with_parent


def test_a_child_gets_sigterm_when_the_thread_that_started_it_ends() -> None:
    """Why children must be started from long-lived threads (Linux's PR_SET_PDEATHSIG)."""
    started: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        started["child"] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=die_with_parent
        )

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    child = started["child"]
    try:
        child.wait(timeout=10)
    finally:
        child.kill()
    assert child.returncode == -15


def test_the_manager_starts_vllm_on_the_event_loops_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not on a thread-pool thread: anyio ends idle pool threads, and vLLM went down with one
    minutes after it had started."""
    threads: list[threading.Thread] = []

    def start(self: VLLMProcess) -> None:
        threads.append(threading.current_thread())
        self.port = 1

    monkeypatch.setattr(VLLMProcess, "start", start)
    monkeypatch.setattr(VLLMProcess, "alive", lambda self: True)
    healthy = httpx.MockTransport(lambda request: httpx.Response(200))

    async def scenario() -> threading.Thread:
        async with httpx.AsyncClient(transport=healthy) as client:
            upstreams = Upstreams(Settings(data_dir=tmp_path), VLLMClient(client), spawn=True)
            (upstream,) = upstreams.replicas("tiny-chat")
            await upstreams._bring_up(upstream)
            assert upstream.ready
            return threading.current_thread()

    loop_thread = asyncio.run(scenario())

    assert threads == [loop_thread] and loop_thread is threading.main_thread()
