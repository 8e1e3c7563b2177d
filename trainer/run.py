"""One training run as the leader, its data-parallel followers and the loop all take it."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from service.settings import BaseModelConfig
from trainer.dataset import TrainingExample
from trainer.hyperparameters import Hyperparameters
from trainer.objectives import Objective, PreferenceObjective, SupervisedObjective

TOKENS_PER_FORWARD = 8192


@dataclass(frozen=True)
class TrainingRun:
    """What to train: the base, the examples, the settings and where to start from."""

    base: BaseModelConfig
    examples: list[TrainingExample]
    hp: Hyperparameters
    _: KW_ONLY
    seed: int
    # Bounds the padded tokens of one forward pass (see ``trainer.batching``).
    tokens_per_forward: int = TOKENS_PER_FORWARD
    validation: list[TrainingExample] | None = None  # measured, never trained on
    resume_from: Path | None = None  # a snapshot file of this run, to continue from
    start_from: Path | None = None  # an adapter folder (a fine-tuned model's), else a fresh one
    dpo_beta: float | None = None  # None: the supervised loss; else DPO with this beta

    def objective(self) -> Objective:
        """What a step optimises: the supervised loss, or DPO's for preference pairs."""
        if self.dpo_beta is None:
            return SupervisedObjective(self.tokens_per_forward)
        return PreferenceObjective(self.dpo_beta)
