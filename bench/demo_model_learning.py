"""What a job teaches the SmolLM2 demo model, and what it costs it (README: A real demo model).

Starts `openft serve` with `OPENFT_DEMO_MODEL_NAME=smollm2-135m-instruct` in a scratch folder, runs
one job per hyperparameter set on a training file (default: `examples/support_faq.jsonl`) and
prints, per job: the share of taught questions and of held-out paraphrases whose greedy answer
contains the fact (`examples/support_faq_facts.json`), how many of 8 general questions the model
still answers right, and the forgetting check's figures (general answers lost, loss rise). The
first row is the base model itself.
Run: `.venv/bin/python bench/demo_model_learning.py [--file F | --catalog N] ['{"n_epochs": 3}' ..]`
(each argument is one job's `hyperparameters`, as JSON). `--catalog N` trains on N examples of an
invented price list instead (N/2 products, two phrasings each; a third phrasing is held out), to
see how the `auto` rules do at a data set's size. `--base-model '{"lora_target_modules": [...]}'`
overrides the demo model's settings (`BaseModelConfig` fields) for every job.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob
from serving import greedy_answers, start_openft

from service.settings import SMOLLM2_MODEL_NAME, Settings
from trainer.smollm2 import create_smollm2

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
COLOURS = ["Amber", "Cobalt", "Crimson", "Jade", "Onyx", "Saffron", "Slate", "Teal", "Violet",
           "Ivory"]  # fmt: skip
KINDS = ["Drifter", "Harbor", "Kestrel", "Meridian", "Nomad", "Quarry", "Ridgeback", "Summit",
         "Tandem", "Voyager"]  # fmt: skip
Pairs = list[tuple[str, str]]


def catalog(n_examples: int) -> tuple[bytes, Pairs, Pairs]:
    """An invented price list: the training file, its taught pairs and held-out paraphrases."""
    lines, taught, held_out = [], [], []
    for i in range(n_examples // 2):
        bike = f"{COLOURS[i % 10]} {KINDS[(i // 10 + i) % 10]}"
        price = f"${149 + 37 * i}"
        answer = f"The {bike} costs {price}."
        for question in (f"How much does the {bike} cost?", f"What is the price of the {bike}?"):
            chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            lines.append(json.dumps({"messages": chat}))
            taught.append((question, price))
        held_out.append((f"How much is the {bike} bike?", price))
    return ("\n".join(lines) + "\n").encode(), taught, held_out


def share(client: OpenAI, model: str, pairs: list[tuple[str, str]]) -> float:
    answers = greedy_answers(client, model, [q for q, _ in pairs])
    expected = [fact.lower() for _, fact in pairs]
    hits = sum(fact in a.lower() for a, fact in zip(answers, expected, strict=True))
    return hits / len(pairs)


def row(
    client: OpenAI, model: str, label: str, facts: tuple[Pairs, Pairs], check: dict[str, Any],
    secs: float,
) -> None:  # fmt: skip
    taught, held_out = facts
    figures = {
        "job": label,
        "taught": round(share(client, model, taught), 3),
        "held_out": round(share(client, model, held_out), 3),
        "general_kept": f"{round(share(client, model, list(GENERAL.items())) * 8)}/8",
        "answers_lost": check.get("answers_lost") and round(check["answers_lost"], 3),
        "warning": check.get("warning"),
        "loss_rise": check.get("relative_increase") and round(check["relative_increase"], 3),
        "train_s": round(secs),
    }
    print(json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=ROOT / "examples" / "support_faq.jsonl")
    parser.add_argument(
        "--catalog", type=int, nargs="+", help="train on N invented price-list examples (each N)"
    )
    parser.add_argument(
        "--base-model", type=json.loads, default={}, help="demo model settings to override (JSON)"
    )
    parser.add_argument("hyperparameters", nargs="*", default=["{}"])
    args = parser.parse_args()
    if args.catalog:
        data_sets = [(f"{n} examples", *catalog(n)) for n in args.catalog]
    else:
        data_sets = [(args.file.name, args.file.read_bytes(), TAUGHT, HELD_OUT)]
    workdir = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    env = {"OPENFT_DEMO_MODEL_NAME": SMOLLM2_MODEL_NAME}
    if args.base_model:
        demo = Settings(demo_model_name=SMOLLM2_MODEL_NAME)
        create_smollm2(Path(demo.demo_model.path), cache=demo.cache_dir / "downloads")
        base_model = {**demo.demo_model.model_dump(mode="json"), **args.base_model}
        env["OPENFT_BASE_MODELS"] = json.dumps([base_model])
    server, base, key = start_openft(workdir, env=env, timeout_s=1200)
    try:
        client = OpenAI(base_url=base + "/v1", api_key=key, timeout=600)
        for name, data, taught, held_out in data_sets:
            row(client, SMOLLM2_MODEL_NAME, f"{name}: base model", (taught, held_out), {}, 0)
            training = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
            for spec in args.hyperparameters:
                started = time.monotonic()
                job = train(client, training.id, json.loads(spec))
                check = (job.model_extra or {})["openft"]["forgetting"]
                label = f"{name}: {json.dumps(job.hyperparameters.model_dump())}"
                secs = time.monotonic() - started
                model = job.fine_tuned_model or ""
                row(client, model, label, (taught, held_out), check, secs)
    finally:
        server.terminate()
        server.wait()


def train(client: OpenAI, training_file: str, hyperparameters: dict[str, Any]) -> FineTuningJob:
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2_MODEL_NAME,
        training_file=training_file,
        hyperparameters=hyperparameters,  # type: ignore[arg-type]
    )
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded", "failed", "cancelled",
    ):  # fmt: skip
        time.sleep(2)
    assert job.status == "succeeded" and job.fine_tuned_model, job.error
    return job


if __name__ == "__main__":
    main()
