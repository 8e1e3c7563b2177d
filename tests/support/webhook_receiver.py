"""A real HTTP webhook receiver on 127.0.0.1, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next of ``statuses`` (the last one repeats) and keeps it.

    ``hold()`` makes the next requests wait, unanswered, until ``release()``.
    """

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses or (200,))
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        """The first ``count`` requests, once they have arrived (answered or held)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} webhooks arrived")
                self._changed.wait(left)
            return self.received[:count]

    def _arrived(self, headers: dict[str, str], body: bytes) -> int:
        with self._changed:
            self.received.append(Received(headers, body))
            self._changed.notify_all()
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver._arrived({k.lower(): v for k, v in self.headers.items()}, body)
                receiver._open.wait(120)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@contextmanager
def running_receiver(*statuses: int) -> Iterator[Receiver]:
    receiver = Receiver(*statuses)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        receiver.server.shutdown()
        receiver.server.server_close()
