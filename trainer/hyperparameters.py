"""Resolving "auto" hyperparameters the way OpenAI does (epochs) or documents (the rest)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_DEFAULT_EPOCHS = 25
AUTO_DPO_BETA = 0.1
# RFT: answers sampled per prompt at compute_multiplier 1 (auto), and validation runs per job.
SAMPLES_PER_UNIT_COMPUTE = 4
AUTO_EVALUATIONS = 5


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = None  # DPO jobs only
    reinforcement: ReinforcementHyperparameters | None = None  # RFT jobs only

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {} if self.beta is None else {"beta": self.beta}
        found |= {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "n_epochs": self.n_epochs,
        }
        if self.reinforcement is not None:
            found |= self.reinforcement.as_dict()
        return found

    def total_steps(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size) * self.n_epochs


@dataclass(frozen=True)
class ReinforcementHyperparameters:
    """RFT's own, as OpenAI names them. ``compute_multiplier`` scales the answers sampled per
    prompt (4 at 1.0, at least 2: GRPO compares answers to the same prompt); ``eval_interval``
    is steps between validation runs; ``eval_samples`` answers per validation prompt (1: the
    greedy answer); ``reasoning_effort`` is accepted and echoed (no local model reasons at a
    set effort)."""

    compute_multiplier: float
    eval_interval: int
    eval_samples: int
    reasoning_effort: str = "default"

    @property
    def samples_per_prompt(self) -> int:
        return max(2, round(SAMPLES_PER_UNIT_COMPUTE * self.compute_multiplier))

    def as_dict(self) -> dict[str, Any]:
        return {
            "compute_multiplier": self.compute_multiplier,
            "eval_interval": self.eval_interval,
            "eval_samples": self.eval_samples,
            "reasoning_effort": self.reasoning_effort,
        }


def auto_epochs(n_examples: int) -> int:
    """OpenAI's rule: 3 epochs, raised so examples x epochs >= 100, lowered so <= 25,000."""
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, between 1 and 256 (small sets train one example a step)."""
    return max(1, min(256, round(n_examples * 0.002)))


def resolve(
    requested: dict[str, Any], n_examples: int, *, auto_learning_rate_multiplier: float
) -> Hyperparameters:
    """Numbers for "auto" (the learning-rate multiplier's is the base model's setting); a DPO
    job's hyperparameters hold ``beta`` (auto: 0.1, as TRL's); an RFT job's (those with
    ``compute_multiplier``) RFT's own four."""

    def pick(name: str, auto: Any) -> Any:
        value = requested.get(name, "auto")
        return auto if value == "auto" else value

    found = Hyperparameters(
        beta=float(pick("beta", AUTO_DPO_BETA)) if "beta" in requested else None,
        n_epochs=int(pick("n_epochs", auto_epochs(n_examples))),
        batch_size=int(pick("batch_size", auto_batch_size(n_examples))),
        learning_rate_multiplier=float(
            pick("learning_rate_multiplier", auto_learning_rate_multiplier)
        ),
    )
    if "compute_multiplier" not in requested:
        return found
    total = found.total_steps(n_examples)
    reinforcement = ReinforcementHyperparameters(
        compute_multiplier=float(pick("compute_multiplier", 1.0)),
        eval_interval=int(pick("eval_interval", max(1, total // AUTO_EVALUATIONS))),
        eval_samples=int(pick("eval_samples", 1)),
        reasoning_effort=str(requested.get("reasoning_effort", "default")),
    )
    return replace(found, reinforcement=reinforcement)
