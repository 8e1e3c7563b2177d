"""Reinforcement fine-tuning in the training loop (``trainer.reinforcement``) on the random-weight
demo model: reinforcement files through the one validator, GRPO steps with a python grader in its
sandbox, validation rewards at ``eval_interval`` and resuming from a snapshot taking exactly the
steps an uninterrupted run takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from graders.config import item_problem, parse_grader
from graders.python_sandbox import SandboxLimits
from service.settings import BaseModelConfig
from tests.integration.test_data_parallel import in_two_processes
from trainer.dataset import DatasetError, PromptExample, TrainingExample, item_of, prepare_file
from trainer.demo_model import create_demo_model
from trainer.hyperparameters import resolve
from trainer.judge import HttpJudge
from trainer.loop import TrainingHooks, TrainingStopped, train_lora
from trainer.placement import Accelerator, load_base, load_tokenizer, plan
from trainer.reinforcement import ReinforcementSetup, _answer_logps, _token_logps
from trainer.run import ReinforcementRun, TrainingRun

# Longer answers score higher: a reward every sample differs on, so every group has a signal.
LENGTH_GRADER = {
    "type": "python",
    "name": "length",
    "source": "def grade(sample, item):\n"
    "    return min(len(sample['output_text']) / item['target'], 1.0)\n",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> BaseModelConfig:
    folder = create_demo_model(tmp_path_factory.mktemp("models") / "tiny-chat")
    return BaseModelConfig(name="tiny-chat", path=str(folder), learning_rate=1e-3, lora_rank=4)


def lines(n: int, **extra: Any) -> bytes:
    rows = [
        {
            "messages": [{"role": "user", "content": f"Tell me about thing {i}."}],
            "target": 40,
            **extra,
        }
        for i in range(n)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def prompts(
    base: BaseModelConfig,
    data: bytes,
    grader: dict[str, Any] = LENGTH_GRADER,
    param: str = "validation_file",  # at least 1 example (a training file: 10)
) -> list[TrainingExample]:
    parsed = parse_grader(grader)

    def check(example: dict[str, Any]) -> str | None:
        return item_problem(parsed, item_of(example))

    prepared = prepare_file(
        [data],
        load_tokenizer(base),
        file_id="file-rft",
        method="reinforcement",
        max_length=256,
        param=param,
        item_check=check,
    )
    return prepared.examples


def run_of(base: BaseModelConfig, **options: Any) -> TrainingRun:
    examples = prompts(base, lines(4))
    requested = {"n_epochs": 2, "batch_size": 2, "compute_multiplier": 1.0, "eval_interval": 2}
    hp = resolve(requested, len(examples), auto_learning_rate_multiplier=1.0)
    setup = ReinforcementSetup(
        grader=LENGTH_GRADER,
        samples_per_prompt=hp.reinforcement.samples_per_prompt if hp.reinforcement else 0,
        eval_samples=1,
        max_completion_tokens=12,
    )
    grading = ReinforcementRun(setup, HttpJudge({}), SandboxLimits(timeout_s=10))
    return TrainingRun(
        base,
        examples,
        hp,
        seed=5,
        validation=prompts(base, lines(2)),
        reinforcement=grading,
        **options,
    )


def test_a_reinforcement_file_becomes_prompts_with_items(base: BaseModelConfig) -> None:
    found = prompts(base, lines(3, answer={"city": "Oslo"}))
    assert len(found) == 3 and all(isinstance(p, PromptExample) for p in found)
    assert found[0].item == {"target": 40, "answer": {"city": "Oslo"}}
    tokenizer = load_tokenizer(base)
    assert tokenizer.decode(found[0].prompt_ids).rstrip().endswith("assistant")


def test_a_file_without_what_the_grader_reads_fails_with_the_example_number(
    base: BaseModelConfig,
) -> None:
    grader = {
        "type": "string_check",
        "name": "s",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer.city }}",
        "operation": "eq",
    }
    data = lines(10, answer={"city": "Oslo"}).replace(b'"city"', b'"town"', 1)
    with pytest.raises(DatasetError) as failed:
        prompts(base, data, grader, "training_file")
    assert failed.value.code == "invalid_training_file"
    assert "Example 1: the grader's template '{{item.answer.city}}': item.answer has no 'city'" in (
        failed.value.message
    )
    chat = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    ).encode()
    with pytest.raises(DatasetError) as failed:
        prompts(base, (chat + b"\n") * 10, param="training_file")
    assert "Example 1, message 2: the last message must be from the user or developer" in (
        failed.value.message
    )


def test_grpo_steps_sample_grade_and_validate_at_the_eval_interval(
    base: BaseModelConfig, tmp_path: Path
) -> None:
    result = train_lora(run_of(base), output_dir=tmp_path)
    assert [m.step for m in result.steps] == [1, 2, 3, 4]
    for metrics in result.steps:
        assert 0.0 <= metrics.train_mean_token_accuracy <= 1.0
        details = metrics.details or {}
        assert details["errors"]["graders"][0]["train_python_grader_runtime_error_mean"] == 0.0
        assert 0 < details["completion_tokens_mean"] <= 12
        assert set(details["timing"]) == {"sampling", "grading", "training"}
    validated = [m.step for m in result.steps if m.full_valid_mean_token_accuracy is not None]
    assert validated == [2, 4]  # eval_interval 2
    assert result.trained_tokens > 0
    weights = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in weights.values())


def test_a_resumed_run_takes_the_steps_an_uninterrupted_one_takes(
    base: BaseModelConfig, tmp_path: Path
) -> None:
    whole = train_lora(run_of(base), output_dir=tmp_path / "whole")
    snapshots: dict[int, Path] = {}

    def keep(step: int, path: Path) -> None:
        snapshots[step] = tmp_path / f"kept-{step}.pt"
        snapshots[step].write_bytes(path.read_bytes())

    stopping = TrainingHooks(
        stop_reason=lambda: "pause" if not snapshots else None, on_snapshot=keep
    )
    with pytest.raises(TrainingStopped):
        train_lora(run_of(base), output_dir=tmp_path / "first", hooks=stopping)
    assert list(snapshots) == [1]
    resumed = train_lora(run_of(base, resume_from=snapshots[1]), output_dir=tmp_path / "second")
    assert [m.step for m in resumed.steps] == [1, 2, 3, 4]
    for mine, theirs in zip(resumed.steps, whole.steps, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-4, abs=1e-6)
        assert mine.train_mean_token_accuracy == pytest.approx(theirs.train_mean_token_accuracy)
        assert mine.full_valid_mean_token_accuracy == pytest.approx(
            theirs.full_valid_mean_token_accuracy
        )


def test_two_processes_share_each_steps_prompts(base: BaseModelConfig, tmp_path: Path) -> None:
    """Data-parallel RFT: each process samples and grades its share of a step's prompts (with its
    own generator, so the figures are not a single process's), the gradients are averaged, and
    the follower exits cleanly."""
    result, exit_codes = in_two_processes(run_of(base), tmp_path / "two")
    assert exit_codes == [0]
    assert [m.step for m in result.steps] == [1, 2, 3, 4]
    assert all(0.0 <= m.train_mean_token_accuracy <= 1.0 for m in result.steps)
    assert [m.step for m in result.steps if m.full_valid_mean_token_accuracy is not None] == [2, 4]
    weights = load_file(tmp_path / "two" / "final" / "adapter_model.safetensors")
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in weights.values())


def test_prompts_sampled_in_one_batch_get_the_answers_each_gets_alone(
    base: BaseModelConfig,
) -> None:
    """A step's prompts go through ``generate`` together, left-padded to the longest: greedy,
    each prompt's answer is the one it gets on its own (also when its keys and values are
    computed once for several answers), and answers stay grouped by prompt."""
    rows = [
        {"messages": [{"role": "user", "content": "Hi."}], "target": 40},
        {"messages": [{"role": "user", "content": "Tell me a long story " * 6}], "target": 40},
        {"messages": [{"role": "user", "content": "Tell me about thing 7."}], "target": 40},
    ]
    examples = prompts(base, "".join(json.dumps(row) + "\n" for row in rows).encode())
    assert len({len(e.prompt_ids) for e in examples if isinstance(e, PromptExample)}) == 3
    objective = run_of(base).objective()
    model = get_peft_model(
        load_base(base, plan(base, Accelerator.detect())),
        LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )

    together = objective._sample(model, examples, 1, greedy=True)  # type: ignore[attr-defined]
    alone = [objective._sample(model, [e], 1, greedy=True)[0] for e in examples]  # type: ignore[attr-defined]
    # several answers a prompt: each prompt is read once and its keys and values repeated
    repeated = objective._sample(model, examples, 3, greedy=True)  # type: ignore[attr-defined]
    sampled = objective._sample(model, examples, 3, greedy=False)  # type: ignore[attr-defined]

    assert [[a.tokens for a in group] for group in together] == [
        [a.tokens for a in group] for group in alone
    ]
    assert [[a.tokens for a in group] for group in repeated] == [
        [group[0].tokens] * 3 for group in alone
    ]
    assert all(group[0].tokens for group in together)
    assert [[a.prompt for a in group] for group in sampled] == [[e, e, e] for e in examples]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_answers_scored_after_one_pass_over_their_prompt_match_whole_sequences(
    base: BaseModelConfig, checkpointing: bool
) -> None:
    """GRPO runs a group's shared prompt once and repeats its keys and values for the answers:
    the log-probs and their gradients are those of each whole sequence (under gradient
    checkpointing, which keeps no cache, the whole sequences are what runs)."""
    model = get_peft_model(
        load_base(base, plan(base, Accelerator.detect())),
        LoraConfig(
            r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
        ),
    )
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    generator = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, 200, (1, 11), generator=generator)
    lengths = torch.tensor([5, 1, 3, 5])
    answers = torch.randint(3, 200, (4, 5), generator=generator)
    taken = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).float()
    answers[taken == 0] = 0
    trained = [p for p in model.parameters() if p.requires_grad]

    def scored(logps: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        ((logps * taken).sum(1) / taken.sum(1)).mean().backward()
        return logps.detach() * taken, [p.grad.clone() for p in trained]  # type: ignore[union-attr]

    shared = scored(_answer_logps(model, prompt, answers, taken))
    ids = torch.cat([prompt.expand(4, -1), answers], dim=1)
    mask = torch.cat([torch.ones(4, 11, dtype=torch.long), taken.long()], dim=1)
    whole = scored(_token_logps(model, ids, mask, 11))

    torch.testing.assert_close(shared[0], whole[0], rtol=1e-4, atol=1e-5)
    for got, expected in zip(shared[1], whole[1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in shared[1])
