"""How soon a fine-tuned model answers after its job succeeds.

Starts `openft serve` (worker + vLLM + demo model) in a scratch folder, trains N small jobs one
after another and, for each, times the first chat completion sent the moment the job is seen as
`succeeded` (it includes publishing and hot-loading the adapter into vLLM). The baseline, measured
in the same run, is the next request to the same, now loaded, model; the ratio says what the first
request costs on top. `--base-model PATH` serves that model instead of the demo model; `--label`
suffixes the results. Run: `.venv/bin/python bench/first_request.py [--jobs 5] [--base-model PATH]
[--label gpu]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from openai import OpenAI
from results import write_result
from serving import ServedBase, add_serving_arguments, result_name, start_openft

ROW = {
    "messages": [
        {"role": "user", "content": "What is the code word?"},
        {"role": "assistant", "content": "The code word is lantern-9."},
    ]
}


def chat_seconds(client: OpenAI, model: str) -> float:
    started = time.perf_counter()
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the code word?"}],
        max_tokens=12, temperature=0,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    add_serving_arguments(parser)
    args = parser.parse_args()
    jobs = args.jobs
    served = ServedBase.of(args.base_model)
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    server, base, key = start_openft(workdir, env=served.env)
    try:
        client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        data = client.files.create(file=("d.jsonl", (json.dumps(ROW) + "\n").encode() * 10),
                                   purpose="fine-tune")  # fmt: skip
        first, steady, since_finished = [], [], []
        for _ in range(jobs):
            job = client.fine_tuning.jobs.create(model=served.name, training_file=data.id,
                                                 hyperparameters={"n_epochs": 2})  # fmt: skip
            while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                time.sleep(0.02)
            assert job.fine_tuned_model is not None and job.finished_at is not None
            first.append(chat_seconds(client, job.fine_tuned_model))
            since_finished.append(time.time() - job.finished_at)
            steady.append(chat_seconds(client, job.fine_tuned_model))
        median_first, median_steady = statistics.median(first), statistics.median(steady)
        print(f"jobs: {jobs}; base model {served.describe()}")
        print(f"first request after 'succeeded' (publish + load + answer): {median_first:.3f} s")
        print(f"baseline, the next request to the loaded model:           {median_steady:.3f} s")
        print(f"ratio first / baseline: {median_first / median_steady:.1f}x")
        print(
            f"seconds from finished_at (whole seconds) to the first 200: median "
            f"{statistics.median(since_finished):.2f} s (max {max(since_finished):.2f})"
        )
        write_result(
            result_name("first_request", args.label),
            {
                "base_model": served.describe(),
                "jobs": jobs,
                "first_request_s": round(median_first, 3),
                "next_request_s": round(median_steady, 3),
                "finished_at_to_first_200_s": {
                    "median": round(statistics.median(since_finished), 3),
                    "max": round(max(since_finished), 3),
                },
            },
        )
    except BaseException:
        print(f"failed; logs are in {workdir}")
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
