"""README's quickstart, run as written on the real demo model, and what it must show.

The ``sh`` block after README's ``<!-- quickstart`` marker runs in bash, in a fresh folder, against
a fresh ``openft serve`` on SmolLM2-135M-Instruct (built once per machine in the shared cache),
with the printed key in place of ``sk-openft-...``. Then, through the SDK: the fine-tuned model
answers the taught questions and most held-out paraphrases with the facts, its base none; the
eval report puts it ahead; it still answers most general questions its base answers right, as
many as the job's forgetting check counted, and an over-trained job loses far more and is warned
of. A tool-calling job on the same model comes back as ``tool_calls``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from service.settings import SMOLLM2_MODEL_NAME
from tests.e2e.test_fine_tune_end_to_end import TERMINAL, wait_for
from tests.support.server import (
    ServerProcess,
    openft_command,
    start_server,
    wait_until_models_ready,
)
from trainer.forgetting import ANSWER_TOKENS
from trainer.smollm2 import GENERAL_QUESTIONS

pytestmark = pytest.mark.timeout(2400)  # three jobs on a real model, on two cores

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FACTS = json.loads((EXAMPLES / "support_faq_facts.json").read_text())
TAUGHT = [(q, f["answer_contains"]) for f in FACTS for q in f["questions"]]
HELD_OUT = [(f["paraphrase"], f["answer_contains"]) for f in FACTS]
PLACEHOLDER_KEY = "sk-openft-..."
ORDER_STATUS = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Where a customer's order is",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


def quickstart_block() -> str:
    """The ``sh`` block right after README's quickstart marker."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- quickstart[^>]*-->\n```sh\n(.*?)\n```", readme, re.DOTALL)
    assert found, "README has no <!-- quickstart --> sh block"
    return found.group(1)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``make run``'s server on the default demo model, in a fresh data dir."""
    # RFT answers are graded on their opening (test_an_rft_job_...): 8 tokens are enough.
    env = {"OPENFT_DEMO_MODEL_NAME": SMOLLM2_MODEL_NAME, "OPENFT_RFT_MAX_COMPLETION_TOKENS": "8"}
    # the first start on a machine also downloads and converts the model (about a minute)
    process = start_server(tmp_path_factory.mktemp("quickstart-serve"), env, timeout_s=900)
    try:
        wait_until_models_ready(process, timeout_s=600)
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(demo_server: ServerProcess, sdk: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    key = demo_server.bootstrap_key()
    assert key is not None
    return sdk(demo_server.api_url, key, timeout=600)


@pytest.fixture(scope="module")
def quickstart(
    demo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """README's commands, run by bash in a new user's folder; what they printed and wrote."""
    key = demo_server.bootstrap_key()
    assert key is not None
    folder = tmp_path_factory.mktemp("quickstart-user")
    for name in (".venv", "examples"):  # what a clone of the repository has
        (folder / name).symlink_to(ROOT / name)
    script = quickstart_block()
    assert PLACEHOLDER_KEY in script
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENFT_")}
    env["OPENFT_BASE_URL"] = demo_server.api_url
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(PLACEHOLDER_KEY, key)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{demo_server.logs()}"
    report = json.loads((folder / "eval" / "report.json").read_text())
    return {"stdout": done.stdout, "stderr": done.stderr, "report": report}


def answers(client: openai.OpenAI, model: str, questions: list[str], max_tokens: int) -> list[str]:
    def ask(question: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            temperature=0, max_tokens=max_tokens,
        )  # fmt: skip
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(8) as pool:  # vLLM batches them
        return list(pool.map(ask, questions))


def right(
    client: openai.OpenAI, model: str, pairs: list[tuple[str, str]], max_tokens: int = 32
) -> list[bool]:
    said = answers(client, model, [q for q, _ in pairs], max_tokens)
    return [fact.casefold() in a.casefold() for a, (_, fact) in zip(said, pairs, strict=True)]


def the_job(client: openai.OpenAI) -> Any:
    """The quickstart's job (its model's name carries the suffix it gave)."""
    jobs = client.fine_tuning.jobs.list(limit=100).data
    (job,) = [j for j in jobs if ":support:" in (j.fine_tuned_model or "")]
    assert job.status == "succeeded", job.error
    return job


def test_the_quickstart_teaches_the_faq_and_its_base_knew_none_of_it(
    client: openai.OpenAI, quickstart: dict[str, Any]
) -> None:
    model = the_job(client).fine_tuned_model
    # the eval file is the held-out paraphrases: its report has both models' greedy answers
    rows = {row["prompt"]: row for row in quickstart["report"]["rows"]}
    assert sorted(rows) == sorted(q for q, _ in HELD_OUT)

    taught = right(client, model, TAUGHT)
    held_out = [fact.casefold() in rows[q]["fine_tuned"]["text"].casefold() for q, fact in HELD_OUT]
    base_held_out = [fact.casefold() in rows[q]["base"]["text"].casefold() for q, fact in HELD_OUT]
    first_phrasings = [(f["questions"][0], f["answer_contains"]) for f in FACTS]

    assert sum(taught) / len(taught) >= 0.9, taught
    assert sum(held_out) / len(held_out) >= 0.5, held_out
    assert not any(base_held_out) and not any(right(client, SMOLLM2_MODEL_NAME, first_phrasings))
    # `ask --compare` printed the base model's answer, then the fine-tuned one with the fact
    base_line, fine_tuned_line = quickstart["stdout"].splitlines()[:2]
    assert base_line.startswith(f"{SMOLLM2_MODEL_NAME}: ") and "45 days" not in base_line
    assert fine_tuned_line.startswith(f"{model}: ") and "45 days" in fine_tuned_line


def test_its_eval_report_puts_the_fine_tuned_model_ahead(quickstart: dict[str, Any]) -> None:
    metrics = {m["metric"]: m for m in quickstart["report"]["metrics"]}

    assert quickstart["report"]["examples"] == len(HELD_OUT)
    assert metrics["token_f1"]["fine_tuned"] > metrics["token_f1"]["base"], metrics


def test_it_keeps_most_general_knowledge_and_the_forgetting_check_counts_what_it_lost(
    client: openai.OpenAI, quickstart: dict[str, Any]
) -> None:
    job = the_job(client)
    base_right = right(client, SMOLLM2_MODEL_NAME, GENERAL_QUESTIONS, ANSWER_TOKENS)
    known = [pair for pair, ok in zip(GENERAL_QUESTIONS, base_right, strict=True) if ok]

    kept = right(client, job.fine_tuned_model, known, ANSWER_TOKENS)

    assert len(known) >= 18, base_right
    # At 135M parameters a job that teaches 12 facts costs some general answers (README: A real
    # demo model); most stay.
    assert sum(kept) / len(known) >= 0.6, [
        q for (q, _), ok in zip(known, kept, strict=True) if not ok
    ]
    check = forgetting(job)
    assert check["measure"] == "answers", check
    # The check (the trainer's greedy answers, in training precision, one batch) and the served
    # model (vLLM's bfloat16, batched as requests come) agree within that noise: measured 0-3 of
    # the 24 answers apart.
    assert abs(check["known_answers"] - len(known)) <= 3, (check, base_right)
    assert abs(check["kept_answers"] - sum(kept)) <= 3, (check, kept)
    assert "Forgetting check" in quickstart["stderr"]  # --follow showed its figures


def forgetting(job: Any) -> dict[str, Any]:
    return dict((job.model_extra or {})["openft"]["forgetting"])


def test_an_over_trained_job_loses_more_and_the_check_warns(
    client: openai.OpenAI, quickstart: dict[str, Any]
) -> None:
    faq_only = [
        line
        for line in (EXAMPLES / "support_faq.jsonl").read_text().splitlines()
        if json.loads(line)["messages"][0]["content"] in dict(TAUGHT)
    ]
    assert len(faq_only) == len(TAUGHT)
    training = client.files.create(
        file=("faq_only.jsonl", ("\n".join(faq_only) + "\n").encode()), purpose="fine-tune"
    )

    job = client.fine_tuning.jobs.create(
        model=SMOLLM2_MODEL_NAME,
        training_file=training.id,
        hyperparameters={"n_epochs": 5, "learning_rate_multiplier": 8},
    )
    done = wait_for(client, job.id, TERMINAL, timeout_s=1200)

    assert done.status == "succeeded", done.error
    check = forgetting(done)
    assert check["warning"] and check["answers_lost"] > check["threshold"], check
    assert check["answers_lost"] >= forgetting(the_job(client))["answers_lost"] + 0.2, check
    events = client.fine_tuning.jobs.list_events(job.id, limit=100)
    warnings = [e.message for e in events if e.level == "warn"]
    assert any("general questions" in message for message in warnings), warnings


def order_status_lines() -> bytes:
    asks = [
        ("Where is my order {}?", "A1001"), ("Has order {} shipped yet?", "B2044"),
        ("Can you check on order {} for me?", "C3187"), ("What's the status of {}?", "D4420"),
        ("Track order {} please.", "E5093"), ("Is my order {} on its way?", "F6318"),
        ("When will order {} arrive?", "G7252"), ("Order {}: where is it now?", "H8375"),
        ("I'm waiting on {}. Any news?", "J9461"), ("Look up order {}.", "K1529"),
        ("Did order {} leave the warehouse?", "L2637"), ("Status of my order {}, please.", "M3746"),
    ]  # fmt: skip
    lines = []
    for i, (question, order_id) in enumerate(asks):
        arguments = json.dumps({"order_id": order_id})
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "get_order_status", "arguments": arguments},
        }
        messages = [
            {"role": "user", "content": question.format(order_id)},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
        lines.append(json.dumps({"messages": messages, "tools": [ORDER_STATUS]}))
    return ("\n".join(lines) + "\n").encode()


def test_a_tool_calling_job_on_the_demo_model_returns_tool_calls(
    client: openai.OpenAI, quickstart: dict[str, Any]
) -> None:
    training = client.files.create(file=("orders.jsonl", order_status_lines()), purpose="fine-tune")
    # 3 epochs: its loss is 0.00 from the 6th of 36 steps (auto would take 8 epochs, 96 steps)
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2_MODEL_NAME,
        training_file=training.id,
        suffix="orders",
        hyperparameters={"n_epochs": 3},
    )
    done = wait_for(client, job.id, TERMINAL, timeout_s=1200)
    assert done.status == "succeeded" and done.fine_tuned_model, done.error

    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "Where is my order Z7781?"}],
        tools=[ORDER_STATUS],  # type: ignore[list-item]
        temperature=0,
        max_tokens=60,
    )

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_order_status"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"order_id": "Z7781"}  # type: ignore[union-attr]


# Yes/no questions whose answer is yes. The base model opens none of them with "Yes" greedily
# ("The answer to this question is..."), and about one sampled answer in twelve.
OPENS_WITH_YES = {
    "type": "python",
    "name": "opens_with_yes",
    "source": "def grade(sample, item):\n"
    "    return 1.0 if sample['output_text'].strip().lower().startswith('yes') else 0.0\n",
}
YES_QUESTIONS = [
    "Is the sun a star?", "Can birds fly?", "Is water made of hydrogen and oxygen?",
    "Is Paris in France?", "Do fish live in water?", "Is ice cold?", "Is the earth round?",
    "Do plants need light?", "Is the moon smaller than the earth?", "Do cats have whiskers?",
    "Is snow made of water?", "Can people swim?", "Is gold a metal?", "Do bees make honey?",
    "Is the ocean salty?", "Does the sun rise in the east?",
]  # fmt: skip
HELD_OUT_YES = [
    "Is grass green?", "Do dogs bark?", "Is fire hot?", "Can fish swim?",
    "Is Rome in Italy?", "Do trees have leaves?", "Is the sky above us?", "Do cows eat grass?",
]  # fmt: skip


def prompt_lines(questions: list[str]) -> bytes:
    rows = [{"messages": [{"role": "user", "content": q}]} for q in questions]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_an_rft_job_teaches_the_demo_model_what_its_grader_rewards(
    client: openai.OpenAI, demo_server: ServerProcess, tmp_path: Path
) -> None:
    """GRPO with a python grader on the real model: the validation reward rises over the job, and
    under the same grader (``openft eval --grader``) the served model beats its base."""
    training = client.files.create(
        file=("yes.jsonl", prompt_lines(YES_QUESTIONS)), purpose="fine-tune"
    )
    held_out = prompt_lines(HELD_OUT_YES)
    validation = client.files.create(file=("yes-valid.jsonl", held_out), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2_MODEL_NAME,
        training_file=training.id,
        validation_file=validation.id,
        suffix="yes",
        seed=1,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": OPENS_WITH_YES,  # type: ignore[typeddict-item]
                "hyperparameters": {
                    "n_epochs": 3,
                    "batch_size": 4,
                    "compute_multiplier": 2,  # 8 answers a prompt
                    "eval_interval": 2,
                },
            },
        },
    )
    done = wait_for(client, job.id, TERMINAL, timeout_s=1500)
    assert done.status == "succeeded" and done.fine_tuned_model, done.error

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    valid = [
        (d["step"], d["full_valid_mean_reward"]) for d in metrics if "full_valid_mean_reward" in d
    ]
    assert [step for step, _ in valid] == [2, 4, 6, 8, 10, 12]
    assert valid[-1][1] - valid[0][1] >= 0.5, valid
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert all("valid_reward_mean" in (c.metrics.model_dump()) for c in checkpoints)

    (tmp_path / "grader.json").write_text(json.dumps(OPENS_WITH_YES))
    (tmp_path / "held-out.jsonl").write_bytes(held_out)
    env = {**demo_server.env, "OPENFT_BASE_URL": demo_server.api_url, "COLUMNS": "200"}
    env["OPENFT_API_KEY"] = demo_server.bootstrap_key() or ""
    options = [
        "--file",
        str(tmp_path / "held-out.jsonl"),
        "--grader",
        str(tmp_path / "grader.json"),
    ]
    options += ["--max-tokens", "8", "--out", str(tmp_path / "report")]
    evaluated = subprocess.run(
        [*openft_command(), "eval", done.fine_tuned_model, *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (graded,) = report["metrics"]
    assert graded["metric"] == "grader"
    assert graded["fine_tuned"] >= graded["base"] + 0.5, graded
