"""Live prompt tokens counted off the request path, per bin of the training token sketch."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from inference.token_drift import TokenDriftCounter
from service.drift import build_token_sketch
from service.metrics import Metrics
from service.settings import BaseModelConfig
from tests.support.chat_templates import CHATML, build_tokenizer

MODEL = "ft:tiny:acme::AbCd1234"


@pytest.fixture
def base(tmp_path: Path) -> BaseModelConfig:
    build_tokenizer(CHATML).backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    return BaseModelConfig(name="tiny", path=str(tmp_path))


def ids(base: BaseModelConfig, *texts: str) -> list[int]:
    tokenizer = Tokenizer.from_file(str(Path(base.path) / "tokenizer.json"))
    return [t for text in texts for t in tokenizer.encode(text, add_special_tokens=False).ids]


def counted(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["bin"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "openft_drift_tokens_total" and sample.labels["model"] == MODEL
    }


def test_tokens_are_counted_per_bin_with_the_base_models_tokenizer(base: BaseModelConfig) -> None:
    sketch = build_token_sketch(Counter(ids(base, "the lighthouse keeper", "the sea")), top=4)
    assert sketch is not None
    metrics = Metrics()
    drift = TokenDriftCounter(metrics)

    drift.offer(MODEL, base, sketch, ["the lighthouse", "keeper of the sea"])
    drift.offer(MODEL, base, sketch, [])  # nothing to count
    drift.drain()
    drift.stop()

    expected = sketch.bin_counts(ids(base, "the lighthouse", "keeper of the sea"))
    assert counted(metrics) == {str(i): float(n) for i, n in enumerate(expected)}


def test_a_full_queue_drops_prompts_and_says_so(base: BaseModelConfig) -> None:
    sketch = build_token_sketch(Counter(ids(base, "the sea")))
    assert sketch is not None
    metrics = Metrics()
    entered, release = threading.Event(), threading.Event()

    class SlowTokenizer(TokenDriftCounter):
        def _tokenizer(self, base: BaseModelConfig) -> Tokenizer | None:
            entered.set()
            release.wait(10)
            return super()._tokenizer(base)

    drift = SlowTokenizer(metrics, capacity=1)
    drift.offer(MODEL, base, sketch, ["the sea"])  # taken by the thread, which then waits
    assert entered.wait(10)
    drift.offer(MODEL, base, sketch, ["the sea"])  # queued
    drift.offer(MODEL, base, sketch, ["the sea"])  # the queue is full: dropped
    release.set()
    drift.drain()
    drift.stop()

    dropped = metrics.registry.get_sample_value(
        "openft_drift_token_samples_dropped_total", {"model": MODEL}
    )
    assert dropped == 1
    assert sum(counted(metrics).values()) == 2 * len(ids(base, "the sea"))
