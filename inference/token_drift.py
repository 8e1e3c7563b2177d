"""Token drift, off the request path: live prompts tokenized in a background thread.

The gateway offers each answered request's prompt text (after the answer has gone out); a daemon
thread tokenizes it with the base model's own tokenizer (the ``tokenizers`` library, as the
worker did for the training prompts) and counts the tokens per bin of the model's token sketch.
The queue is bounded: when it is full a prompt is dropped and counted as dropped, so a burst
never makes requests wait or memory grow.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from service.drift import TokenSketch
from service.metrics import Metrics
from service.settings import BaseModelConfig

# Before the first encode: the library's thread pool would spin on the cores vLLM needs.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)
QUEUE_CAPACITY = 1024


@dataclass(frozen=True)
class _Prompt:
    model: str
    base: BaseModelConfig
    sketch: TokenSketch
    texts: list[str]


class TokenDriftCounter:
    def __init__(self, metrics: Metrics, capacity: int = QUEUE_CAPACITY) -> None:
        self.metrics = metrics
        self._queue: queue.Queue[_Prompt | None] = queue.Queue(maxsize=capacity)
        self._tokenizers: dict[str, Tokenizer | None] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def offer(
        self, model: str, base: BaseModelConfig, sketch: TokenSketch, texts: list[str]
    ) -> None:
        """Queue a prompt for counting; never blocks."""
        if not texts:
            return
        self._ensure_started()
        try:
            self._queue.put_nowait(_Prompt(model, base, sketch, texts))
        except queue.Full:
            self.metrics.drift_token_samples_dropped.labels(model).inc()

    def drain(self) -> None:
        """Wait until every queued prompt is counted (tests and shutdown)."""
        if self._thread is not None:
            self._queue.join()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._count_forever, name="token-drift", daemon=True
                )
                self._thread.start()

    def _count_forever(self) -> None:
        while (prompt := self._queue.get()) is not None:
            try:
                tokenizer = self._tokenizer(prompt.base)
                if tokenizer is not None:
                    # encode_batch lets go of the GIL while it tokenizes (encode does not, and
                    # would stall the event loop); TOKENIZERS_PARALLELISM=false keeps it on this
                    # thread instead of a pool whose spinning threads take CPU from vLLM.
                    encodings = tokenizer.encode_batch(prompt.texts, add_special_tokens=False)
                    tokens = [token for encoding in encodings for token in encoding.ids]
                    self.metrics.tokens_seen(prompt.model, prompt.sketch, tokens)
            except Exception:  # a bad prompt must not stop the counting of the next ones
                log.exception("could not count the tokens of a prompt to %s", prompt.model)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _tokenizer(self, base: BaseModelConfig) -> Tokenizer | None:
        """The base model's fast tokenizer: ``tokenizer.json`` in its folder, or its hub id."""
        if base.name not in self._tokenizers:
            local = Path(base.path) / "tokenizer.json"
            try:
                found = (
                    Tokenizer.from_file(str(local))
                    if local.is_file()
                    else Tokenizer.from_pretrained(base.path)
                )
            except Exception as exc:
                log.warning("no token drift for %s: no fast tokenizer (%s)", base.name, exc)
                found = None
            self._tokenizers[base.name] = found
        return self._tokenizers[base.name]
