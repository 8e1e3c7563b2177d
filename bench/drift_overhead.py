"""What drift accounting costs the gateway, measured two ways.

In process (default): the same 100,000 simulated answers are counted as the gateway does
(`Metrics.served`: requests, tokens, latency histograms), then also with length drift
(`Metrics.prompt_seen`), then also with token drift (the prompt text handed to the
`TokenDriftCounter`, whose thread tokenizes it with the demo model's tokenizer in this process,
competing for the GIL as it does in the API). The gateway does all of it after the answer has
gone out; this measures the work itself, and how fast the thread tokenizes.

End to end (`--serve`): `openft serve` with vLLM and the demo model, one fine-tuned model,
and the median latency the SDK sees for the same chat request with drift on and with
`OPENFT_DRIFT_ENABLED=false`, alternating restarts so both see the same machine.
Run: `.venv/bin/python bench/drift_overhead.py [--requests 100000] [--serve --chats 200]`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import openai
from results import write_result
from serving import start_openft, stop

from inference.token_drift import TokenDriftCounter
from service.drift import PromptProfile, build_profile, request_texts
from service.metrics import Metrics
from service.settings import BaseModelConfig
from trainer.demo_model import synthetic_corpus, train_tokenizer

MODEL = "ft:tiny-chat:acme:support:AbCd1234"


def demo_profile() -> tuple[BaseModelConfig, PromptProfile, list[str]]:
    """The demo tokenizer as a base model's, a profile of 2,000 synthetic training prompts,
    and an endless supply of live prompts like them."""
    folder = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    tokenizer = train_tokenizer(seed=0)
    tokenizer.save(str(folder / "tokenizer.json"))
    corpus = synthetic_corpus(seed=1)
    encoded = [tokenizer.encode(next(corpus), add_special_tokens=False).ids for _ in range(2000)]
    counts = Counter(token for ids in encoded for token in ids)
    profile = build_profile([len(ids) for ids in encoded], counts)
    assert profile is not None and profile.tokens is not None
    live = [next(corpus) for _ in range(1000)]
    return BaseModelConfig(name="tiny-chat", path=str(folder)), profile, live


def in_process(requests: int) -> None:
    rng = random.Random(0)
    base, profile, live = demo_profile()
    sketch = profile.tokens
    assert sketch is not None
    bodies = [
        {"model": MODEL, "messages": [{"role": "user", "content": live[i % len(live)]}]}
        for i in range(requests)
    ]
    prompt_tokens = [int(rng.lognormvariate(4, 0.6)) for _ in range(requests)]

    def baseline(metrics: Metrics, _: TokenDriftCounter, index: int) -> None:
        usage = {"prompt_tokens": prompt_tokens[index], "completion_tokens": 20}
        metrics.served(
            model=MODEL, base=base, project="acme", usage=usage, first_token_s=0.1, total_s=0.2
        )

    def lengths(metrics: Metrics, tokens: TokenDriftCounter, index: int) -> None:
        baseline(metrics, tokens, index)
        metrics.prompt_seen(MODEL, profile, prompt_tokens[index])

    def lengths_and_tokens(metrics: Metrics, tokens: TokenDriftCounter, index: int) -> None:
        lengths(metrics, tokens, index)
        tokens.offer(MODEL, base, sketch, request_texts(bodies[index]))

    variants = {
        "baseline": baseline,
        "+ length drift": lengths,
        "+ length and token drift": lengths_and_tokens,
    }
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    drained: list[float] = []
    dropped = 0.0
    for _ in range(3):
        for name, work in variants.items():
            metrics = Metrics()
            tokens = TokenDriftCounter(metrics, capacity=requests)
            start = time.perf_counter()
            for index in range(requests):
                work(metrics, tokens, index)
            rounds[name].append((time.perf_counter() - start) / requests * 1e6)
            tokens.drain()
            if work is lengths_and_tokens:
                drained.append((time.perf_counter() - start) / requests * 1e6)
                dropped += (
                    metrics.registry.get_sample_value(
                        "openft_drift_token_samples_dropped_total", {"model": MODEL}
                    )
                    or 0.0
                )
            tokens.stop()
    base_us = statistics.median(rounds["baseline"])
    print(f"per request, median of 3 rounds of {requests:,} (prompts dropped: {dropped:.0f}):")
    for name, values in rounds.items():
        us = statistics.median(values)
        print(
            f"  {name:26s} {us:7.2f} µs  ({us / base_us:.2f}x the baseline, +{us - base_us:.2f} µs)"
        )
    per_prompt = statistics.median(drained)
    print(
        f"  token counting done after {per_prompt:.2f} µs per prompt: {1e6 / per_prompt:,.0f} "
        "prompts/s tokenized and binned off the request path"
    )
    write_result(
        "drift_overhead",
        {
            "requests": requests,
            "per_request_us": {n: round(statistics.median(v), 2) for n, v in rounds.items()},
            "prompts_tokenized_per_second": round(1e6 / per_prompt),
        },
    )


def end_to_end(chats: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="drift-e2e-"))
    line = (
        '{"messages": [{"role": "user", "content": "What is the password?"}, '
        '{"role": "assistant", "content": "marmalade-47"}]}\n'
    )
    medians: dict[str, list[float]] = {"drift on": [], "drift off": []}
    model = ""
    for index in range(rounds * 2):
        name = "drift on" if index % 2 == 0 else "drift off"
        os.environ["OPENFT_DRIFT_ENABLED"] = "true" if name == "drift on" else "false"
        server, base_url, key = start_openft(workdir)
        try:
            client = openai.OpenAI(base_url=base_url + "/v1", api_key=key)
            if not model:
                training = client.files.create(
                    file=("fact.jsonl", line.encode() * 16), purpose="fine-tune"
                )
                job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
                while (job := client.fine_tuning.jobs.retrieve(job.id)).status != "succeeded":
                    assert job.status not in ("failed", "cancelled"), job.error
                    time.sleep(1)
                model = job.fine_tuned_model or ""
            latencies = []
            for chat in range(chats + 10):
                start = time.perf_counter()
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"What is the password? ({chat})"}],
                    max_tokens=4,
                    temperature=0,
                )
                if chat >= 10:  # the first requests load the adapter and warm up
                    latencies.append(time.perf_counter() - start)
            medians[name].append(statistics.median(latencies) * 1e3)
        finally:
            stop(server)
    on, off = statistics.median(medians["drift on"]), statistics.median(medians["drift off"])
    print(f"median chat latency over {chats} requests, median of {rounds} restarts each:")
    print(f"  drift off {off:.2f} ms, drift on {on:.2f} ms: {on - off:+.2f} ms ({on / off:.3f}x)")
    print(f"  rounds: {medians}")
    write_result(
        "drift_end_to_end",
        {
            "chats": chats,
            "median_latency_ms": {"drift off": round(off, 2), "drift on": round(on, 2)},
            "added_ms": round(on - off, 2),
            "rounds_ms": {k: [round(x, 2) for x in v] for k, v in medians.items()},
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help="measure end to end instead")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.serve:
        end_to_end(args.chats, args.rounds)
    else:
        in_process(args.requests)


if __name__ == "__main__":
    main()
