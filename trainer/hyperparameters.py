"""Resolving "auto" hyperparameters the way OpenAI does (epochs) or documents (the rest)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_DEFAULT_EPOCHS = 25
AUTO_DPO_BETA = 0.1


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = None  # DPO jobs only

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {} if self.beta is None else {"beta": self.beta}
        return found | {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "n_epochs": self.n_epochs,
        }

    def total_steps(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size) * self.n_epochs


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
    job's hyperparameters hold ``beta`` (auto: 0.1, as TRL's)."""

    def pick(name: str, auto: Any) -> Any:
        value = requested.get(name, "auto")
        return auto if value == "auto" else value

    return Hyperparameters(
        beta=float(pick("beta", AUTO_DPO_BETA)) if "beta" in requested else None,
        n_epochs=int(pick("n_epochs", auto_epochs(n_examples))),
        batch_size=int(pick("batch_size", auto_batch_size(n_examples))),
        learning_rate_multiplier=float(
            pick("learning_rate_multiplier", auto_learning_rate_multiplier)
        ),
    )
