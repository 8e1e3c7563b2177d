"""What a job teaches the SmolLM2 demo model, and what it costs it (README: A real demo model).

Starts `openft serve` with `OPENFT_DEMO_MODEL_NAME=smollm2-135m-instruct` in a scratch folder, runs
one job per hyperparameter set on a training file (default: `examples/support_faq.jsonl`) and
prints, per job: the share of taught questions and of held-out paraphrases whose greedy answer
contains the fact (`examples/support_faq_facts.json`), how many of 8 general questions the model
still answers right, and the forgetting check's rise. The first row is the base model itself.
Run: `.venv/bin/python bench/demo_model_learning.py [--file F] ['{"n_epochs": 3}' ...]`
(each argument is one job's `hyperparameters`, as JSON).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from openai import OpenAI
from serving import start_openft

from service.settings import SMOLLM2_MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
FACTS = json.loads((ROOT / "examples" / "support_faq_facts.json").read_text())
GENERAL = {
    "What is the capital of France?": "Paris",
    "What is the capital of Japan?": "Tokyo",
    "What is the capital of Germany?": "Berlin",
    "What is the capital of the United Kingdom?": "London",
    "What is 2 plus 2?": "4",
    "What is the opposite of hot?": "cold",
    "What is the chemical symbol for gold?": "Au",
    "Which planet is known as the Red Planet?": "Mars",
}
TAUGHT = [(q, f["answer_contains"]) for f in FACTS for q in f["questions"]]
HELD_OUT = [(f["paraphrase"], f["answer_contains"]) for f in FACTS]


def share(client: OpenAI, model: str, pairs: list[tuple[str, str]]) -> float:
    def answer(question: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            temperature=0, max_tokens=48,
        )  # fmt: skip
        return reply.choices[0].message.content or ""

    return sum(expected.lower() in answer(q).lower() for q, expected in pairs) / len(pairs)


def row(client: OpenAI, model: str, label: str, forgetting: float | None, secs: float) -> None:
    figures = {
        "job": label,
        "taught": round(share(client, model, TAUGHT), 3),
        "held_out": round(share(client, model, HELD_OUT), 3),
        "general_kept": f"{round(share(client, model, list(GENERAL.items())) * 8)}/8",
        "forgetting": forgetting,
        "train_s": round(secs),
    }
    print(json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=ROOT / "examples" / "support_faq.jsonl")
    parser.add_argument("hyperparameters", nargs="*", default=["{}"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    env = {"OPENFT_DEMO_MODEL_NAME": SMOLLM2_MODEL_NAME}
    server, base, key = start_openft(workdir, env=env, timeout_s=1200)
    try:
        client = OpenAI(base_url=base + "/v1", api_key=key, timeout=600)
        row(client, SMOLLM2_MODEL_NAME, "base model", None, 0)
        training = client.files.create(file=args.file.open("rb"), purpose="fine-tune")
        for spec in args.hyperparameters:
            started = time.monotonic()
            job = client.fine_tuning.jobs.create(
                model=SMOLLM2_MODEL_NAME, training_file=training.id,
                hyperparameters=json.loads(spec),
            )  # fmt: skip
            while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
                "succeeded", "failed", "cancelled",
            ):  # fmt: skip
                time.sleep(2)
            assert job.status == "succeeded" and job.fine_tuned_model, job.error
            check = (job.model_extra or {})["openft"]["forgetting"]
            label = json.dumps(job.hyperparameters.model_dump())
            secs = time.monotonic() - started
            row(client, job.fine_tuned_model, label, round(check["relative_increase"], 3), secs)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
