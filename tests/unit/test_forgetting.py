"""The forgetting check: the loss comparison, its events and field, and the two measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer, LlamaForCausalLM

from service.jobs.schemas import JobFindings
from service.settings import BaseModelConfig, Settings
from tests.unit.test_batching import VOCAB, tiny_llama
from trainer import forgetting
from trainer.batching import evaluate
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample
from trainer.demo_model import (
    REFERENCE_ANSWER_TOKENS,
    REFERENCE_EXAMPLES,
    create_demo_model,
    reference_questions,
)
from trainer.forgetting import (
    ADVICE,
    ForgettingCheck,
    KnownAnswer,
    forgetting_check,
    known_answers,
    measure,
    reference_examples,
)


def test_the_relative_increase_is_the_share_of_the_base_loss() -> None:
    check = ForgettingCheck(24, base_loss=2.0, fine_tuned_loss=2.5, threshold=0.10)

    assert check.relative_increase == pytest.approx(0.25)
    assert check.warning
    assert ForgettingCheck(24, 2.0, 1.5, 0.10).relative_increase == pytest.approx(-0.25)


@pytest.mark.parametrize(
    ("fine_tuned_loss", "warning"), [(1.9, False), (2.19, False), (2.21, True), (4.0, True)]
)
def test_only_a_rise_past_the_threshold_warns(fine_tuned_loss: float, warning: bool) -> None:
    assert ForgettingCheck(10, 2.0, fine_tuned_loss, threshold=0.10).warning is warning


def test_the_events_say_the_losses_and_warn_past_the_threshold() -> None:
    gentle = ForgettingCheck(24, 2.31, 2.45, threshold=0.10)
    harsh = ForgettingCheck(24, 2.0, 2.5, threshold=0.10)

    assert gentle.events() == [
        (
            "info",
            "Forgetting check on the 24-example reference set: loss 2.31 → 2.45 (+6.1%) under "
            "the fine-tuned model",
        )
    ]
    (info, warn) = harsh.events()
    assert info[0] == "info" and "(+25.0%)" in info[1]
    assert warn == (
        "warn",
        "The reference-set loss rose by 25.0%, more than the 10% this base model allows: " + ADVICE,
    )
    assert "(-10.0%)" in ForgettingCheck(10, 2.0, 1.8, 0.1).events()[0][1]


def test_the_stored_field_is_what_the_job_object_carries() -> None:
    check = ForgettingCheck(24, 2.0, 2.5, threshold=0.10)

    findings = JobFindings.model_validate({"forgetting": check.as_dict()})

    assert findings.forgetting is not None
    assert findings.forgetting.model_dump() == {
        "reference_examples": 24,
        "measure": "loss",
        "base_loss": 2.0,
        "fine_tuned_loss": 2.5,
        "relative_increase": 0.25,
        "known_answers": 0,
        "kept_answers": 0,
        "answers_lost": 0.0,
        "threshold": 0.10,
        "warning": True,
    }


def test_a_field_stored_before_the_agreement_was_measured_still_reads() -> None:
    stored = {"reference_examples": 24, "base_loss": 2.0, "fine_tuned_loss": 2.5,
              "relative_increase": 0.25, "threshold": 0.10, "warning": True}  # fmt: skip

    check = JobFindings.model_validate({"forgetting": stored}).forgetting

    assert check is not None and check.measure == "loss" and check.answers_lost is None


def on_answers(kept_answers: int, fine_tuned_loss: float = 3.0) -> ForgettingCheck:
    return ForgettingCheck(
        24, base_loss=1.0, fine_tuned_loss=fine_tuned_loss, threshold=0.10, measure="answers",
        known_answers=20, kept_answers=kept_answers,
    )  # fmt: skip


def test_on_answers_only_lost_answers_warn_not_a_loss_rise() -> None:
    restyled = on_answers(kept_answers=19, fine_tuned_loss=3.0)  # loss tripled
    forgot = on_answers(kept_answers=17, fine_tuned_loss=1.1)

    assert restyled.answers_lost == pytest.approx(0.05) and not restyled.warning
    assert forgot.answers_lost == pytest.approx(0.15) and forgot.warning
    assert forgot.as_dict()["answers_lost"] == pytest.approx(0.15)
    assert ForgettingCheck(24, 1.0, 1.0, 0.1, "answers").answers_lost == 0.0  # none known


def test_the_events_of_a_check_on_answers_say_both_figures() -> None:
    (info, warn) = on_answers(kept_answers=17).events()

    assert info == (
        "info",
        "Forgetting check on the 24-example reference set: the fine-tuned model answers 17 of "
        "the 20 questions the base model answers right; loss 1.00 → 3.00 (+200.0%)",
    )
    assert warn == (
        "warn",
        "The fine-tuned model gets 15.0% of the general questions its base model answers right "
        "wrong, more than the 10% this base model allows: " + ADVICE,
    )


def test_reference_lines_with_answer_contains_are_questions_with_a_known_answer() -> None:
    ask = {"role": "user", "content": "What is the capital of France?"}
    lines = [
        {"messages": [ask, {"role": "assistant", "content": "Paris."}], "answer_contains": "Paris"},
        {"messages": [ask, {"role": "assistant", "content": "Paris."}]},  # loss only
        {"messages": [{"role": "system", "content": "Be brief."}, ask,
                      {"role": "assistant", "content": "Paris."}], "answer_contains": " "},
    ]  # fmt: skip
    data = b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"

    (question,) = known_answers(data)

    assert question == KnownAnswer([ask], "Paris")
    assert question.right("It is PARIS, of course") and not question.right("Lyon")


def test_only_questions_the_base_model_answers_right_count(
    tiny_base: BaseModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []
    replies = iter([["Paris.", "Osaka.", "Tokyo!"], ["Paris.", "Kyoto."]])  # base, then tuned

    def generate(model: Any, tokenizer: Any, chats: list[Any], **_: Any) -> list[str]:
        asked.append([chat[-1]["content"] for chat in chats])
        return next(replies)

    monkeypatch.setattr(forgetting, "generate_answers", generate)
    questions = [
        KnownAnswer([{"role": "user", "content": q}], a)
        for q, a in [("France?", "Paris"), ("Japan?", "Tokyo"), ("Japan, again?", "Tokyo")]
    ]
    on = tiny_base.model_copy(update={"forgetting_measure": "answers"})

    check = measure(on, adapter(tiny_base, scale=0.0), chats(5), 64, questions, tokenizer=object())

    assert asked == [["France?", "Japan?", "Japan, again?"], ["France?", "Japan, again?"]]
    assert (check.known_answers, check.kept_answers) == (2, 1)
    assert check.answers_lost == 0.5 and check.warning
    assert check.threshold == on.forgetting_warn_answers_lost


def test_the_demo_model_comes_with_its_own_general_reference_set(tmp_path: Path) -> None:
    demo = Settings(data_dir=tmp_path).demo_model
    create_demo_model(Path(demo.path))
    assert demo.reference_file == str(tmp_path / "models" / "tiny-chat" / "openft-reference.jsonl")
    assert demo.forgetting_warn_relative_increase == 0.005

    examples = reference_examples(
        Path(demo.reference_file).read_bytes(), demo, AutoTokenizer.from_pretrained(demo.path)
    )

    assert len(examples) == REFERENCE_EXAMPLES
    assert all(e.n_trained_tokens > REFERENCE_ANSWER_TOKENS / 2 for e in examples)
    assert reference_questions(seed=0) == reference_questions(seed=0)
    assert not any("password" in question for question in reference_questions(seed=0))


def test_a_base_model_without_a_usable_reference_set_is_not_checked(
    tiny_base: BaseModelConfig, tmp_path: Path
) -> None:
    model = adapter(tiny_base, scale=0.0)
    unset = tiny_base.model_copy(update={"reference_file": None})
    missing = tiny_base.model_copy(update={"reference_file": str(tmp_path / "no")})

    assert forgetting_check(unset, model, 1024) is None
    assert forgetting_check(missing, model, 1024) is None


@pytest.fixture
def tiny_base(tmp_path: Path) -> BaseModelConfig:
    tiny_llama().save_pretrained(tmp_path / "base")
    return BaseModelConfig(name="tiny", path=str(tmp_path / "base"), lora_rank=4, lora_alpha=8)


def adapter(base: BaseModelConfig, *, scale: float) -> PeftModel:
    """A LoRA adapter on the base; a fresh one (scale 0) leaves the model as it is."""
    model = LlamaForCausalLM.from_pretrained(base.path)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn_like(weight) * scale)
    assert isinstance(peft_model, PeftModel)
    return peft_model


def chats(n: int) -> list[TokenizedExample]:
    found = []
    for i in range(n):
        ids = [(i * 7 + j * 3) % (VOCAB - 1) + 1 for j in range(12)]
        labels = [IGNORE_INDEX] * 6 + ids[6:]  # the second half is the "assistant" turn
        found.append(TokenizedExample(ids, labels, n_trained_tokens=6, n_tokens=12))
    return found


def test_the_base_loss_is_the_base_models_and_a_fresh_adapter_changes_nothing(
    tiny_base: BaseModelConfig,
) -> None:
    examples = chats(5)
    plain = LlamaForCausalLM.from_pretrained(tiny_base.path)

    check = measure(tiny_base, adapter(tiny_base, scale=0.0), examples, 64)

    assert check.base_loss == pytest.approx(evaluate(plain, examples, 64).loss, rel=1e-6)
    assert check.fine_tuned_loss == pytest.approx(check.base_loss, rel=1e-6)
    assert check.reference_examples == 5 and not check.warning


def test_a_changed_adapter_changes_only_the_fine_tuned_loss(tiny_base: BaseModelConfig) -> None:
    examples = chats(5)
    plain = LlamaForCausalLM.from_pretrained(tiny_base.path)

    check = measure(tiny_base, adapter(tiny_base, scale=0.5), examples, 64)

    assert check.base_loss == pytest.approx(evaluate(plain, examples, 64).loss, rel=1e-6)
    assert check.fine_tuned_loss != pytest.approx(check.base_loss, rel=1e-3)
