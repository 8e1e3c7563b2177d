"""What drift accounting adds per request, against the request accounting the gateway does anyway.

Both loops run in this process on the same 100,000 simulated answers: the baseline counts each
one as the gateway does (`Metrics.served`: requests, tokens, latency histograms); the other also
bins its prompt length into the model's training profile (`Metrics.prompt_seen`). The gateway
does both after the answer has gone out, so neither adds to the client's latency; this measures
the work itself.
Run: `.venv/bin/python bench/drift_overhead.py [--requests 100000]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from service.drift import build_profile
from service.metrics import Metrics
from service.settings import BaseModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(0)
    profile = build_profile([int(rng.lognormvariate(4, 0.5)) for _ in range(2000)])
    assert profile is not None
    base = BaseModelConfig(name="tiny-chat", path="/models/tiny-chat")
    model = "ft:tiny-chat:acme:support:AbCd1234"
    prompts = [int(rng.lognormvariate(4, 0.6)) for _ in range(args.requests)]

    def baseline(metrics: Metrics, prompt: int) -> None:
        usage = {"prompt_tokens": prompt, "completion_tokens": 20}
        metrics.served(
            model=model, base=base, project="acme", usage=usage, first_token_s=0.1, total_s=0.2
        )

    def with_drift(metrics: Metrics, prompt: int) -> None:
        baseline(metrics, prompt)
        metrics.prompt_seen(model, profile, prompt)

    rounds: dict[str, list[float]] = {"baseline": [], "with drift": []}
    for _ in range(3):
        for name, work in (("baseline", baseline), ("with drift", with_drift)):
            metrics = Metrics()
            start = time.perf_counter()
            for prompt in prompts:
                work(metrics, prompt)
            rounds[name].append((time.perf_counter() - start) / len(prompts) * 1e6)
    base_us = statistics.median(rounds["baseline"])
    drift_us = statistics.median(rounds["with drift"])
    print(f"per request: baseline accounting {base_us:.2f} µs, with drift {drift_us:.2f} µs")
    print(
        f"drift adds {drift_us - base_us:.2f} µs per request ({drift_us / base_us:.2f}x the "
        "accounting alone), after the answer has gone out (bar: < 1 ms)"
    )


if __name__ == "__main__":
    main()
