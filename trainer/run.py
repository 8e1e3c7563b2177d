"""One training run as the leader, its data-parallel followers and the loop all take it."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from graders.grading import GradingServices
from graders.python_sandbox import SandboxLimits
from service.settings import BaseModelConfig
from trainer.dataset import TrainingExample
from trainer.hyperparameters import Hyperparameters
from trainer.judge import HttpJudge
from trainer.objectives import Objective, PreferenceObjective, SupervisedObjective
from trainer.placement import load_tokenizer
from trainer.reinforcement import ReinforcementObjective, ReinforcementSetup

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
    reinforcement: ReinforcementRun | None = None  # RFT: GRPO with the job's grader

    def objective(self) -> Objective:
        """What a step optimises: the supervised loss, DPO's for preference pairs, or GRPO's
        for reinforcement prompts."""
        if self.reinforcement is not None:
            return self.reinforcement.objective(self.base)
        if self.dpo_beta is None:
            return SupervisedObjective(self.tokens_per_forward)
        return PreferenceObjective(self.dpo_beta)

    @property
    def validate_every(self) -> int | None:
        """Steps between validation runs when the method fixes them (RFT's eval_interval)."""
        rft = self.hp.reinforcement
        return rft.eval_interval if rft is not None and self.reinforcement is not None else None


@dataclass(frozen=True)
class ReinforcementRun:
    """An RFT run's grading: the setup, and where its judges and sandbox limits come from
    (plain data: a data-parallel follower builds its own objective from it)."""

    setup: ReinforcementSetup
    judge: HttpJudge
    sandbox: SandboxLimits

    def objective(self, base: BaseModelConfig) -> Objective:
        return ReinforcementObjective(
            self.setup,
            load_tokenizer(base),
            GradingServices(judge=self.judge, sandbox=self.sandbox),
        )
