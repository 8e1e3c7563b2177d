"""How fast the training-file validator streams, against bare ``orjson.loads`` per line.

Writes a JSONL file of chat examples (a mix of short and multi-turn chats, tool calls, weights and
text parts) to a scratch folder, then reads it in 1 MiB chunks twice per round: the baseline
splits lines and parses each with ``orjson.loads``; the validator gets the same chunks through
``feed``, as the upload check and the worker do. Rounds alternate so drift hits both sides; the
best round of each is compared. The ratio is validator throughput / baseline throughput (the bar
is >= 0.5). Run: `.venv/bin/python bench/validation_throughput.py [--mb 200] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from results import write_result

from service.datasets.validator import DatasetValidator

CHUNK = 1 << 20
PROSE = (
    "the lighthouse keeper answers every question about tides storms ships and the old harbour "
    "with patience and a dry sense of humour while the kettle boils on the iron stove"
)
WORDS = PROSE.split(" ")


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def example(rng: random.Random) -> dict[str, object]:
    system = {"role": "system", "content": sentence(rng, 12)}
    kind = rng.random()
    if kind < 0.6:
        turns = rng.randint(1, 3)
        messages = [system]
        for turn in range(turns):
            messages.append({"role": "user", "content": sentence(rng, rng.randint(8, 40))})
            answer = {"role": "assistant", "content": sentence(rng, rng.randint(10, 80))}
            if turn < turns - 1 and rng.random() < 0.3:
                answer["weight"] = 0
            messages.append(answer)
        return {"messages": messages}
    if kind < 0.85:
        call = {
            "id": f"call_{rng.randrange(10**6)}",
            "type": "function",
            "function": {"name": "tide_table", "arguments": orjson.dumps({"day": 3}).decode()},
        }
        return {
            "messages": [
                system,
                {"role": "user", "content": sentence(rng, 15)},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": sentence(rng, 10)},
                {"role": "assistant", "content": sentence(rng, 30)},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "tide_table",
                        "description": "Tide times for a day",
                        "parameters": {
                            "type": "object",
                            "properties": {"day": {"type": "integer"}},
                        },
                    },
                }
            ],
        }
    parts = [
        {"type": "text", "text": sentence(rng, 20)},
        {"type": "text", "text": sentence(rng, 5)},
    ]
    return {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": sentence(rng, 40)},
        ]
    }


def write_file(path: Path, megabytes: int) -> tuple[int, int]:
    rng = random.Random(7)
    lines = [orjson.dumps(example(rng)) + b"\n" for _ in range(5000)]
    size = examples = 0
    with path.open("wb") as out:
        while size < megabytes * 1_000_000:
            line = lines[examples % len(lines)]
            out.write(line)
            size += len(line)
            examples += 1
    return size, examples


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def baseline(path: Path) -> int:
    """Split lines across chunks and parse each: the least any line-by-line reader does."""
    parsed = 0
    pending = b""
    for chunk in chunks(path):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line:
                orjson.loads(line)
                parsed += 1
    if pending:
        orjson.loads(pending)
        parsed += 1
    return parsed


def validate(path: Path) -> int:
    validator = DatasetValidator(method="supervised", file_id="file-bench")
    for chunk in chunks(path):
        validator.feed(chunk)
    report = validator.finish()
    assert report.error() is None, report.error()
    return report.n_examples


def timed(run: object, path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    count = run(path)  # type: ignore[operator]
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated file in MB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openft-bench-") as scratch:
        path = Path(scratch) / "train.jsonl"
        size, examples = write_file(path, args.mb)
        print(f"file: {size / 1e6:.0f} MB, {examples:,} examples")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        best = {"orjson.loads per line": float("inf"), "DatasetValidator": float("inf")}
        for _ in range(args.rounds):
            for name, run in (("orjson.loads per line", baseline), ("DatasetValidator", validate)):
                seconds, count = timed(run, path)
                assert count == examples, (name, count, examples)
                best[name] = min(best[name], seconds)
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    for name, seconds in best.items():
        print(f"{name:24s} {seconds:6.2f} s  {size / 1e6 / seconds:7.1f} MB/s")
    ratio = best["orjson.loads per line"] / best["DatasetValidator"]
    print(f"validator throughput / baseline throughput: {ratio:.2f}x (bar >= 0.5x)")
    print(f"peak RSS growth while both ran: {rss_growth / 1024:.1f} MiB")
    write_result(
        "validation_throughput",
        {
            "megabytes": round(size / 1e6),
            "mb_per_s": {name: round(size / 1e6 / s, 1) for name, s in best.items()},
            "ratio": round(ratio, 3),
            "peak_rss_growth_mib": round(rss_growth / 1024, 1),
        },
    )


if __name__ == "__main__":
    main()
