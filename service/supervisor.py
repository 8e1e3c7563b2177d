"""Child processes of ``openft serve``: training workers, kept alive and stopped with the API.

The API process never imports the trainer: workers are separate Python processes
(``python -m trainer.worker``) started here, restarted with a back-off when they exit, and
killed by the kernel if the API process dies (parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 30.0


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent goes away (Linux).

    "Parent" is the thread that started the child: start children only from threads that live
    as long as the process (the main thread, the event loop's, a supervisor's own thread).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Supervisor:
    """Keeps ``count`` copies of ``command`` running until ``stop``."""

    def __init__(self, name: str, command: Sequence[str], count: int) -> None:
        self.name = name
        self.command = list(command)
        self.count = count
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(
                target=self._keep_alive, name=f"{self.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _keep_alive(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            child = self._spawn()
            if child is None:
                return
            code = child.wait()
            if self._stopping.is_set():
                return
            log.warning("%s exited with %s; restarting in %.0fs", self.name, code, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            child = subprocess.Popen(self.command, preexec_fn=die_with_parent)
            self._children.append(child)
            return child

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every child (workers hand their job back), then SIGKILL stragglers."""
        with self._lock:
            self._stopping.set()
            children = list(self._children)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
