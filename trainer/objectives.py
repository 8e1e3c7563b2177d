"""What a training step optimises: the next-token loss on assistant tokens, or DPO's.

An objective takes one optimizer step's examples, accumulates the gradient of the step's loss and
returns the loss and an accuracy; it also measures validation examples without a gradient.
GRPO's, for reinforcement fine-tuning, is in ``trainer.reinforcement``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from peft import PeftModel

from trainer.batching import (
    accumulate_gradients,
    evaluate,
    keeps_logits,
    loss_tokens,
    pad,
    trained_logits,
)
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample
from trainer.dataset import PreferencePair, TrainingExample

DEFAULT_DPO_BETA = 0.1


class TrainingFailed(Exception):
    """Training cannot succeed (the loss diverged, memory ran out, the grader cannot run): fail
    the job at once."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Objective(Protocol):
    def step(self, model: PeftModel, batch: list[TrainingExample]) -> tuple[float, float]:
        """Accumulate the gradient of the step's mean loss; returns (loss, accuracy)."""

    def evaluate(self, model: PeftModel, examples: list[TrainingExample]) -> tuple[float, float]:
        """The same figures over ``examples``, without a gradient."""

    def tokens(self, example: TrainingExample) -> int:
        """The tokens the example puts through the model (what a job bills)."""

    def weight(self, batch: list[TrainingExample]) -> float:
        """What ``step``'s mean loss is taken over (to combine shares of a step)."""

    def step_details(self) -> dict[str, Any] | None:
        """What the last step found beyond its loss and accuracy (RFT's per-grader scores)."""


@dataclass
class SupervisedObjective:
    """Cross-entropy on the tokens of the assistant turns that train (``trainer.batching``);
    the accuracy is the share of those tokens predicted exactly."""

    tokens_per_forward: int

    def step(self, model: PeftModel, batch: list[TrainingExample]) -> tuple[float, float]:
        totals = accumulate_gradients(model, _chats(batch), self.tokens_per_forward)
        return totals.loss, totals.accuracy

    def evaluate(self, model: PeftModel, examples: list[TrainingExample]) -> tuple[float, float]:
        totals = evaluate(model, _chats(examples), self.tokens_per_forward)
        return totals.loss, totals.accuracy

    def tokens(self, example: TrainingExample) -> int:
        assert isinstance(example, TokenizedExample)
        return len(example.input_ids)

    def weight(self, batch: list[TrainingExample]) -> float:
        return sum(loss_tokens(e) for e in _chats(batch))

    def step_details(self) -> dict[str, Any] | None:
        return None


@dataclass
class PreferenceObjective:
    """Direct Preference Optimization's sigmoid loss: -log sigmoid(beta * (d_policy - d_ref)),
    where d is the log-probability of the preferred answer minus the non-preferred one's.

    The policy is the LoRA model; the reference is the same model with its adapter switched off
    (the frozen base), so no second copy of the weights exists. The reference's log-probabilities
    never change, so each pair's are computed once. The accuracy is the share of pairs whose
    preferred answer the policy favours more than the reference does (reward accuracy).
    """

    beta: float = DEFAULT_DPO_BETA
    _reference: dict[int, torch.Tensor] = field(default_factory=dict)

    def step(self, model: PeftModel, batch: list[TrainingExample]) -> tuple[float, float]:
        loss_sum = 0.0
        wins = 0
        for pair in _pairs(batch):  # one pair per forward pass: memory stays that of one pair
            loss, won = self._loss(model, pair)
            (loss / len(batch)).backward()
            loss_sum += float(loss.item())
            wins += won
        return loss_sum / len(batch), wins / len(batch)

    def evaluate(self, model: PeftModel, examples: list[TrainingExample]) -> tuple[float, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                results = [self._loss(model, pair) for pair in _pairs(examples)]
        finally:
            model.train(was_training)
        return (
            sum(float(loss.item()) for loss, _ in results) / len(results),
            sum(won for _, won in results) / len(results),
        )

    def tokens(self, example: TrainingExample) -> int:
        assert isinstance(example, PreferencePair)
        return len(example.chosen.input_ids) + len(example.rejected.input_ids)

    def weight(self, batch: list[TrainingExample]) -> float:
        return len(batch)

    def step_details(self) -> dict[str, Any] | None:
        return None

    def _loss(self, model: PeftModel, pair: PreferencePair) -> tuple[torch.Tensor, bool]:
        policy = answer_logps(model, pair)
        reference = self._reference_logps(model, pair)
        margin = self.beta * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
        return -torch.nn.functional.logsigmoid(margin), bool(margin.item() > 0)

    def _reference_logps(self, model: PeftModel, pair: PreferencePair) -> torch.Tensor:
        key = id(pair)
        if key not in self._reference:
            with torch.no_grad(), model.disable_adapter():
                self._reference[key] = answer_logps(model, pair).detach()
        return self._reference[key]


def answer_logps(model: torch.nn.Module, pair: PreferencePair) -> torch.Tensor:
    """Summed log-probabilities of the preferred and the non-preferred answer's tokens; the
    vocabulary projection runs only at positions whose next token is an answer's."""
    device = next(model.parameters()).device
    input_ids, labels, attention = (t.to(device) for t in pad([pair.chosen, pair.rejected]))
    logits, targets = trained_logits(model, input_ids, labels, attention, keeps_logits(model))
    taken = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), dim=-1)
    logps = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1))
    return (logps.squeeze(-1) * taken).sum(-1)


def _chats(examples: list[TrainingExample]) -> list[TokenizedExample]:
    assert all(isinstance(e, TokenizedExample) for e in examples)
    return examples  # type: ignore[return-value]


def _pairs(examples: list[TrainingExample]) -> list[PreferencePair]:
    assert all(isinstance(e, PreferencePair) for e in examples)
    return examples  # type: ignore[return-value]
