"""Reinforcement fine-tuning's objective: GRPO on the LoRA adapter, rewards from OpenAI's graders.

Each step samples several answers per prompt from the current policy (the adapter on), grades
them all in one batch (one python-grader sandbox per step), and turns each group's rewards into
advantages ``(r - mean) / (std + eps)``. The loss per answer token is ``-A * log p`` (the on-policy
ratio is 1, so this is GRPO's clipped objective at its centre) plus ``beta`` times the k3 estimate
of the KL divergence to the base model, which is the same model with its adapter switched off, as
DPO's reference is. Validation answers are greedy when ``eval_samples`` is 1 (what a served model
answers at temperature 0), sampled otherwise. Sampling draws on torch's generator, which the loop
snapshots, so a resumed job samples what an uninterrupted one would.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from graders.config import Grader, parse_grader, walk
from graders.grading import Grade, GradingServices, grade_batch
from graders.samples import Sample
from trainer.batching import keeps_logits
from trainer.dataset import PromptExample, TrainingExample
from trainer.objectives import TrainingFailed

ADVANTAGE_EPS = 1e-4
# Answers sampled by one ``generate`` call at most (a step's prompts x samples_per_prompt, split).
SEQUENCES_PER_GENERATE = 64
_HERMES_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
ERROR_FLAGS = (
    "sample_parse_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_runtime_error",
    "model_grader_server_error",
)


@dataclass(frozen=True)
class ReinforcementSetup:
    """What an RFT run needs beyond the examples: its grader (as the job sent it), the answers'
    format, how many answers per prompt, and the KL weight."""

    grader: dict[str, Any]
    samples_per_prompt: int
    eval_samples: int
    max_completion_tokens: int
    response_format: dict[str, Any] | None = None
    kl_beta: float = 0.04
    temperature: float = 1.0


@dataclass
class Answer:
    """One sampled answer: its tokens (the stop token included when it stopped) and its sample."""

    prompt: PromptExample
    tokens: list[int]
    sample: Sample


@dataclass
class ReinforcementObjective:
    setup: ReinforcementSetup
    tokenizer: PreTrainedTokenizerBase
    grading: GradingServices
    grader: Grader = field(init=False)
    _details: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.grader = parse_grader(self.setup.grader)

    def step(self, model: PeftModel, batch: list[TrainingExample]) -> tuple[float, float]:
        """Sample, grade, and accumulate the gradient of the step's mean loss; returns (loss,
        mean reward)."""
        prompts = _prompts(batch)
        started = time.perf_counter()
        groups = self._sample(model, prompts, self.setup.samples_per_prompt, greedy=False)
        sampled = time.perf_counter()
        answers = [a for group in groups for a in group]
        grades = grade_batch(
            self.grader, [(a.sample, a.prompt.item) for a in answers], self.grading
        )
        graded = time.perf_counter()
        _require_working_grader(grades)
        loss_sum = 0.0
        size = self.setup.samples_per_prompt
        for index, group in enumerate(groups):
            rewards = torch.tensor([g.reward for g in grades[index * size : (index + 1) * size]])
            advantages = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + ADVANTAGE_EPS)
            loss = self._group_loss(model, group, advantages)
            (loss / len(groups)).backward()
            loss_sum += float(loss.item())
        finished = time.perf_counter()
        self._details = self._describe(answers, grades)
        self._details["timing"] = {
            "sampling": sampled - started,
            "grading": graded - sampled,
            "training": finished - graded,
        }
        return loss_sum / len(groups), _mean(g.reward for g in grades)

    def evaluate(self, model: PeftModel, examples: list[TrainingExample]) -> tuple[float, float]:
        """(0, mean reward) over ``examples``' answers: greedy with one sample, else sampled."""
        count = self.setup.eval_samples
        groups = self._sample(model, _prompts(examples), count, greedy=count == 1)
        answers = [answer for group in groups for answer in group]
        grades = grade_batch(
            self.grader, [(a.sample, a.prompt.item) for a in answers], self.grading
        )
        return 0.0, _mean(g.reward for g in grades)

    def tokens(self, example: TrainingExample) -> int:
        """The prompt's tokens once per sampled answer (what the forward passes read)."""
        assert isinstance(example, PromptExample)
        return len(example.prompt_ids) * self.setup.samples_per_prompt

    def weight(self, batch: list[TrainingExample]) -> float:
        return len(batch)

    def step_details(self) -> dict[str, Any] | None:
        return self._details

    def _sample(
        self, model: PeftModel, prompts: list[PromptExample], count: int, *, greedy: bool
    ) -> list[list[Answer]]:
        """``count`` answers to each prompt, grouped by prompt, from as few ``generate`` calls as
        ``SEQUENCES_PER_GENERATE`` allows: decoding reads every weight once per token whatever
        the batch, so one left-padded batch costs little more than one prompt."""
        per_call = max(1, SEQUENCES_PER_GENERATE // count)
        groups: list[list[Answer]] = []
        was_training = model.training
        model.eval()
        try:
            for first in range(0, len(prompts), per_call):
                groups += self._generate(model, prompts[first : first + per_call], count, greedy)
        finally:
            model.train(was_training)
        return groups

    def _generate(
        self, model: PeftModel, prompts: list[PromptExample], count: int, greedy: bool
    ) -> list[list[Answer]]:
        device = next(model.parameters()).device
        stop = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id or stop or 0
        width = max(len(p.prompt_ids) for p in prompts)
        input_ids = torch.tensor(
            [[pad] * (width - len(p.prompt_ids)) + p.prompt_ids for p in prompts]
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(p.prompt_ids)) + [1] * len(p.prompt_ids) for p in prompts]
        )
        options: dict[str, Any] = (
            {"do_sample": False}
            if greedy
            else {
                "do_sample": True,
                "temperature": self.setup.temperature,
                "top_p": 1.0,
                "top_k": 0,
            }
        )
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if count > 1 and width > 1:  # each prompt read once, not once per answer
            options["past_key_values"] = _prompt_cache(model, input_ids, attention_mask, count)
            input_ids = input_ids.repeat_interleave(count, dim=0)
            attention_mask = attention_mask.repeat_interleave(count, dim=0)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=self.setup.max_completion_tokens,
                num_return_sequences=1 if "past_key_values" in options else count,
                pad_token_id=pad,
                eos_token_id=stop,
                use_cache=True,
                **options,
            )
        rows = output[:, width:].tolist()  # prompt i's answers are rows i * count ...
        groups = []
        for index, prompt in enumerate(prompts):
            answers = []
            for row in rows[index * count : (index + 1) * count]:
                tokens, finished = _until_stop(row, stop)
                text = str(
                    self.tokenizer.decode(
                        tokens[:-1] if finished else tokens, skip_special_tokens=True
                    )
                )
                answers.append(Answer(prompt, tokens, self._sample_of(text, finished)))
            groups.append(answers)
        return groups

    def _sample_of(self, text: str, finished: bool) -> Sample:
        calls = [
            {"id": f"call_{n}", "type": "function", "function": _function(found.group(1))}
            for n, found in enumerate(_HERMES_CALL.finditer(text))
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return Sample.from_message(
            message,
            "stop" if finished else "length",
            parse_json=self.setup.response_format is not None,
        )

    def _group_loss(
        self, model: PeftModel, group: Sequence[Answer], advantages: torch.Tensor
    ) -> torch.Tensor:
        """GRPO's loss over one prompt's answers: each answer's mean over its tokens, then the
        mean over the group."""
        device = next(model.parameters()).device
        width = max(len(a.tokens) for a in group)
        pad = self.tokenizer.pad_token_id or 0
        answers = torch.full((len(group), width), pad, dtype=torch.long)
        for row, answer in enumerate(group):
            answers[row, : len(answer.tokens)] = torch.tensor(answer.tokens)
        lengths = torch.tensor([len(a.tokens) for a in group])
        targets = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float().to(device)
        prompt = torch.tensor([group[0].prompt.prompt_ids], device=device)
        answers = answers.to(device)
        policy = _answer_logps(model, prompt, answers, targets)
        with torch.no_grad(), model.disable_adapter():
            reference = _answer_logps(model, prompt, answers, targets)
        delta = reference - policy
        kl = torch.exp(delta) - delta - 1
        per_token = -advantages.to(device).unsqueeze(1) * policy + self.setup.kl_beta * kl
        per_answer = (per_token * targets).sum(1) / targets.sum(1).clamp(min=1)
        return per_answer.mean()

    def _describe(self, answers: list[Answer], grades: list[Grade]) -> dict[str, Any]:
        """OpenAI's per-grader scores and error rates, and the sampled tokens, of one step."""
        scores: dict[str, list[float]] = defaultdict(list)
        for grade in grades:
            for key, value in grade.sub_rewards.items():
                scores[key].append(value)
        graders = [
            {
                "name": sub.name,
                "type": sub.type,
                "train_reward_mean": _mean(scores[key]) if key else _mean(g.reward for g in grades),
            }
            for key, sub in ((_key(prefix), sub) for prefix, sub in walk(self.grader))
        ]
        errors = {
            f"train_{flag}_mean": _mean(float(bool(getattr(g.errors, flag))) for g in grades)
            for flag in ERROR_FLAGS
        }
        usage: dict[str, dict[str, int]] = {}
        for grade in grades:
            for model, tokens in grade.token_usage.items():
                into = usage.setdefault(
                    model, {"train_prompt_tokens": 0, "train_completion_tokens": 0}
                )
                into["train_prompt_tokens"] += tokens.prompt_tokens
                into["train_completion_tokens"] += tokens.completion_tokens
        return {
            "scores": {"graders": graders},
            "errors": {"graders": [{"name": self.grader.name, "type": self.grader.type, **errors}]},
            "completion_tokens_mean": _mean(len(a.tokens) for a in answers),
            "model_graders_token_usage": usage,
        }


def _require_working_grader(grades: list[Grade]) -> None:
    """A step whose every answer met a grader that could not run (the sandbox, the judge) has
    nothing to learn from, and neither will the next: the job fails with the grader's words."""
    broken = [
        g.errors
        for g in grades
        if g.errors.python_grader_server_error or g.errors.model_grader_server_error
    ]
    if grades and len(broken) == len(grades):
        detail = (
            broken[0].python_grader_server_error_type or broken[0].model_grader_server_error_details
        )
        raise TrainingFailed("grader_failed", f"The grader could not run: {detail}")


def _key(prefix: str) -> str:
    """A multi's sub-grader key from its path (``graders.accuracy.``); '' for the grader itself."""
    return prefix.removeprefix("graders.").rstrip(".")


def _until_stop(row: list[int], stop: int | None) -> tuple[list[int], bool]:
    if stop is not None and stop in row:
        end = row.index(stop)
        return row[: end + 1], True
    return row, False


def _function(arguments_json: str) -> dict[str, Any]:
    try:
        call = json.loads(arguments_json)
    except ValueError:
        return {"name": "", "arguments": arguments_json}
    if not isinstance(call, dict):
        return {"name": "", "arguments": arguments_json}
    return {"name": str(call.get("name", "")), "arguments": json.dumps(call.get("arguments", {}))}


def _answer_logps(
    model: torch.nn.Module, prompt: torch.Tensor, answers: torch.Tensor, taken: torch.Tensor
) -> torch.Tensor:
    """log p of each answer token after the shared prompt, shape (group, width); ``answers`` are
    right-padded (``taken`` marks their tokens). The prompt, most of each sequence, goes through
    the model once: its keys and values are repeated for the group, and gradients flow back
    through them, so the log-probs and their gradients are those of each full sequence."""
    group, width = answers.shape
    keep = {"logits_to_keep": 1} if keeps_logits(model) else {}
    opened = model(input_ids=prompt, use_cache=True, **keep)
    cache = opened.past_key_values
    if cache is None:  # no cache under gradient checkpointing: each sequence whole
        ids = torch.cat([prompt.expand(group, -1), answers], dim=1)
        mask = torch.cat([torch.ones_like(prompt).expand(group, -1), taken.long()], dim=1)
        return _token_logps(model, ids, mask, prompt.shape[1])
    logits = opened.logits[:, -1:].expand(group, -1, -1)
    if width > 1:  # the answers' last tokens predict nothing that is scored
        cache.batch_repeat_interleave(group)
        # right padding: a token never attends to the padding after it, so no mask is needed
        rest = model(input_ids=answers[:, :-1], past_key_values=cache, use_cache=True).logits
        logits = torch.cat([logits, rest], dim=1)
    logps = torch.log_softmax(logits.float(), dim=-1)
    return logps.gather(-1, answers.unsqueeze(-1)).squeeze(-1)


def _prompt_cache(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, count: int
) -> Any:
    """The left-padded prompts' keys and values, computed once per prompt and repeated for its
    ``count`` answers (``generate`` would run each prompt ``count`` times); each prompt's last
    token is left for ``generate``, which starts from one. Positions count from each prompt's
    first real token, as ``generate``'s do."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if keeps_logits(model) else {}
    with torch.no_grad():
        opened = model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            **keep,
        )
    cache = opened.past_key_values
    cache.batch_repeat_interleave(count)
    return cache


def _token_logps(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int
) -> torch.Tensor:
    """log p of each token from position ``start`` on, shape (batch, n - start): the logits (a
    vocabulary's width each) are taken at those positions only, not over the prompt."""
    if keeps_logits(model):
        keep = ids.shape[1] - start + 1
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, start - 1 :]
    logits = logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    return logps.gather(-1, ids[:, start:].unsqueeze(-1)).squeeze(-1)


def _prompts(examples: list[TrainingExample]) -> list[PromptExample]:
    assert all(isinstance(e, PromptExample) for e in examples)
    return examples  # type: ignore[return-value]


def _mean(values: Any) -> float:
    found = list(values)
    return sum(found) / len(found) if found else 0.0
