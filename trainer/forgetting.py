"""The forgetting check: a base model's general reference set, without and with the adapter.

At the end of a job the reference set runs under the base model (the adapter switched off) and
under the fine-tuned model, and two figures are taken. The loss: the mean loss per assistant token
(tokenized and masked exactly as training data is). The answers: reference lines may carry
``answer_contains`` (what a right answer says: "Paris"); of those questions the base model answers
right, greedily, the share the fine-tuned model no longer does. The base model's
``forgetting_measure`` says which one warns. The loss suits answers written by people, but it rises
with any new style: measured on SmolLM2 and its own greedy answers, +100% after a job that kept
every general fact. The answers only move when the facts go.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from service.settings import BaseModelConfig, ForgettingMeasure
from trainer.batching import evaluate
from trainer.chat_masks import TokenizedExample
from trainer.dataset import DatasetError, prepare_file
from trainer.placement import load_tokenizer

log = logging.getLogger("openft.forgetting")
ANSWER_TOKENS = 48  # a reference question's greedy answer is cut here
ADVICE = (
    "the model may have lost general ability; consider a lower learning_rate_multiplier or "
    "fewer epochs"
)


@dataclass(frozen=True)
class ForgettingCheck:
    """What the job's ``openft.forgetting`` field says."""

    reference_examples: int
    base_loss: float
    fine_tuned_loss: float
    threshold: float
    measure: ForgettingMeasure = "loss"
    known_answers: int = 0  # questions with answer_contains the base model answers right
    kept_answers: int = 0  # of those, the ones the fine-tuned model still answers right

    @property
    def relative_increase(self) -> float:
        """The loss's rise as a share of the base model's (negative when it fell)."""
        return (self.fine_tuned_loss - self.base_loss) / self.base_loss if self.base_loss else 0.0

    @property
    def answers_lost(self) -> float:
        """The share of the base model's right answers the fine-tuned model gets wrong."""
        return 1.0 - self.kept_answers / self.known_answers if self.known_answers else 0.0

    @property
    def change(self) -> float:
        """The figure the threshold applies to: the measure's rise."""
        return self.relative_increase if self.measure == "loss" else self.answers_lost

    @property
    def warning(self) -> bool:
        return self.change > self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "relative_increase": self.relative_increase,
            "answers_lost": self.answers_lost,
            "warning": self.warning,
        }

    def events(self) -> list[tuple[str, str]]:
        """(level, message) of the job's events: an info, and a warn past the threshold."""
        opening = f"Forgetting check on the {self.reference_examples}-example reference set:"
        loss = (
            f"loss {self.base_loss:.2f} → {self.fine_tuned_loss:.2f} "
            f"({self.relative_increase:+.1%})"
        )
        answers = (
            f"the fine-tuned model answers {self.kept_answers} of the {self.known_answers} "
            "questions the base model answers right"
        )
        if self.measure == "loss":
            found = [("info", f"{opening} {loss} under the fine-tuned model")]
            rise = f"The reference-set loss rose by {self.relative_increase:.1%}"
        else:
            found = [("info", f"{opening} {answers}; {loss}")]
            rise = (
                f"The fine-tuned model gets {self.answers_lost:.1%} of the general questions its "
                "base model answers right wrong"
            )
        if self.warning:
            found.append(
                ("warn", f"{rise}, more than the {self.threshold * 100:g}% this base model "
                 f"allows: {ADVICE}")
            )  # fmt: skip
        return found


def forgetting_check(
    base: BaseModelConfig, model: PeftModel, tokens_per_forward: int
) -> ForgettingCheck | None:
    """The check of ``model``, the job's trained adapter on its base as training left it loaded;
    None when the base model has no usable reference set. It only advises: a problem with the
    operator's file is logged, never failed."""
    if base.reference_file is None:
        return None
    try:
        data = Path(base.reference_file).read_bytes()  # a small set, by design
        tokenizer = load_tokenizer(base)
        examples = reference_examples(data, base, tokenizer)
    except (OSError, DatasetError) as exc:
        log.warning("no forgetting check for %s (%s): %s", base.name, base.reference_file, exc)
        return None
    return measure(base, model, examples, tokens_per_forward, known_answers(data), tokenizer)


def reference_examples(
    data: bytes, base: BaseModelConfig, tokenizer: PreTrainedTokenizerBase
) -> list[TokenizedExample]:
    """The reference file as training examples, checked and tokenized as a training file is."""
    prepared = prepare_file(
        [data],
        tokenizer,
        file_id=Path(base.reference_file or "").name,
        method="supervised",
        max_length=base.max_seq_length,
        param="reference_file",
    )
    return [e for e in prepared.examples if isinstance(e, TokenizedExample)]


@dataclass(frozen=True)
class KnownAnswer:
    """A reference line's question (its chat before the last assistant turn) and what a right
    answer contains (compared case-insensitively)."""

    chat: list[dict[str, Any]]
    answer_contains: str

    def right(self, answer: str) -> bool:
        return self.answer_contains.casefold() in answer.casefold()


def known_answers(data: bytes) -> list[KnownAnswer]:
    """The reference lines with an ``answer_contains`` (the file is valid: prepare_file said so)."""
    found = []
    for line in data.splitlines():
        record = json.loads(line) if line.strip() else {}
        expected = record.get("answer_contains")
        if isinstance(expected, str) and expected.strip():
            messages = record["messages"]
            last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
            found.append(KnownAnswer(messages[:last], expected))
    return found


def measure(
    base: BaseModelConfig,
    model: PeftModel,
    examples: list[TokenizedExample],
    tokens_per_forward: int,
    questions: Sequence[KnownAnswer] = (),
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> ForgettingCheck:
    """Both figures under the base model (the adapter switched off, as DPO's reference is) and
    under the adapter: the loss of ``examples``, and the greedy answers to ``questions``. Both run
    on the model as it was trained (same device, precision and quantization), so only the adapter
    differs. ``tokenizer`` renders ``questions`` (needed only with some)."""
    with model.disable_adapter():
        before = evaluate(model, examples, tokens_per_forward)
        base_right = _right_answers(model, tokenizer, questions)
    after = evaluate(model, examples, tokens_per_forward)
    known = [q for q, right in zip(questions, base_right, strict=True) if right]
    fine_tuned_right = _right_answers(model, tokenizer, known)
    return ForgettingCheck(
        reference_examples=len(examples),
        base_loss=before.loss,
        fine_tuned_loss=after.loss,
        threshold=(
            base.forgetting_warn_relative_increase
            if base.forgetting_measure == "loss"
            else base.forgetting_warn_answers_lost
        ),
        measure=base.forgetting_measure,
        known_answers=len(known),
        kept_answers=sum(fine_tuned_right),
    )


def _right_answers(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase | None, questions: Sequence[KnownAnswer]
) -> list[bool]:
    if not questions:
        return []
    if tokenizer is None:
        raise ValueError("asking the reference questions needs the base model's tokenizer")
    was_training = model.training
    model.eval()
    try:
        answers = generate_answers(
            model, tokenizer, [q.chat for q in questions], max_new_tokens=ANSWER_TOKENS
        )
    finally:
        model.train(was_training)
    return [q.right(answer) for q, answer in zip(questions, answers, strict=True)]


def generate_answers(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    chats: list[list[dict[str, Any]]],
    *,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers to ``chats``, in one left-padded batch, on the model's device."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [
        str(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
        for chat in chats
    ]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    inputs = inputs.to(next(model.parameters()).device)
    with torch.no_grad():
        output = model.generate(
            **inputs, do_sample=False, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    answers = tokenizer.batch_decode(
        output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    return [str(answer) for answer in answers]
