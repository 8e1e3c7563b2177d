"""Supervised LoRA fine-tuning: a plain torch loop over peft, loss on assistant tokens only.

The loop can stop between any two steps and continue later from a snapshot (adapter weights,
optimizer, scheduler, RNG, step count and the metrics so far): the order of examples depends only
on (seed, epoch), so a resumed run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import get_linear_schedule_with_warmup

from service.settings import BaseModelConfig
from trainer.data_parallel import Group
from trainer.dataset import TrainingExample
from trainer.hyperparameters import Hyperparameters
from trainer.objectives import Objective, SupervisedObjective
from trainer.placement import Accelerator, load_base, plan
from trainer.signals import Signal, new_signals

log = logging.getLogger("openft.trainer")
MAX_GRAD_NORM = 1.0
VALIDATION_EVERY = 10  # a validation batch at every tenth of the steps
TOKENS_PER_FORWARD = 8192
SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class StepMetrics:
    step: int
    total_steps: int
    train_loss: float
    train_mean_token_accuracy: float
    # With a validation file: a validation batch every VALIDATION_EVERY-th of the steps and at
    # the last one; the whole validation set at each epoch end.
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    steps: list[StepMetrics]
    trained_tokens: int
    # The trained model, still loaded: what is measured after training uses it (no second load).
    model: PeftModel = field(repr=False, compare=False)


class TrainingStopped(Exception):
    """The worker asked to stop (cancelled, lease lost, paused or shutting down)."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped at step {step}: {reason}")
        self.reason, self.step = reason, step


class TrainingFailed(Exception):
    """Training cannot succeed (the loss diverged, memory ran out): fail the job at once."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class TrainingHooks:
    """How the loop talks to its worker; every hook is optional."""

    on_start: Callable[[], None] = lambda: None  # the model is ready; the first step follows
    on_step: Callable[[StepMetrics], None] = lambda _metrics: None
    # Overfitting or underfitting was first found at the step just taken (``trainer.signals``).
    on_signal: Callable[[Signal], None] = lambda _signal: None
    # Between steps: None to go on, or why to stop; "pause"/"shutdown" save a snapshot first.
    stop_reason: Callable[[], str | None] = lambda: None
    # A snapshot file was written at this step: store it where another worker can find it.
    on_snapshot: Callable[[int, Path], None] = lambda _step, _path: None
    # An epoch (not the last) ended: its adapter is in the folder, to publish as a checkpoint.
    on_epoch_end: Callable[[StepMetrics, Path], None] = lambda _metrics, _folder: None
    snapshot_every: int = 0  # steps; 0 = only at epoch ends and when stopping


@dataclass
class _Progress:
    step: int = 0
    trained_tokens: int = 0
    steps: list[StepMetrics] = field(default_factory=list)


def epoch_order(seed: int, epoch: int, n_examples: int) -> list[int]:
    """The order of examples in one epoch: a function of (seed, epoch) only."""
    indices = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(indices)
    return indices


def train_lora(
    base: BaseModelConfig,
    examples: list[TrainingExample],
    hp: Hyperparameters,
    *,
    seed: int,
    output_dir: Path,
    hooks: TrainingHooks | None = None,
    resume_from: Path | None = None,
    tokens_per_forward: int = TOKENS_PER_FORWARD,
    validation: list[TrainingExample] | None = None,
    start_from: Path | None = None,
    objective: Objective | None = None,
    group: Group | None = None,
) -> TrainingResult:
    """Train a LoRA adapter on ``examples`` and save it (PEFT format) to ``output_dir``.

    ``tokens_per_forward`` bounds the padded tokens of one forward pass (see ``trainer.batching``);
    ``validation`` examples are measured, never trained on; ``start_from`` is an adapter folder
    to continue training (a fine-tuned model's), else a fresh adapter starts from zero;
    ``objective`` is what a step optimises (default: the supervised loss; DPO for pairs);
    ``group``: this process's place in a data-parallel job (``trainer.data_parallel``): every
    rank calls this with the same arguments, trains on its share of each step and stops when the
    leader's hooks say so.
    """
    hooks = hooks or TrainingHooks()
    objective = objective or SupervisedObjective(tokens_per_forward)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = _lora_model(base, start_from, group)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=base.learning_rate * hp.learning_rate_multiplier)
    total = hp.total_steps(len(examples))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    progress = _Progress()
    if resume_from is not None:
        progress = _restore(resume_from, model, optimizer, scheduler)
    per_epoch = math.ceil(len(examples) / hp.batch_size)
    model.train()
    hooks.on_start()
    while progress.step < total:
        epoch, position = divmod(progress.step, per_epoch)
        order = epoch_order(seed, epoch, len(examples))
        start = position * hp.batch_size
        batch = [examples[i] for i in order[start : start + hp.batch_size]]
        loss, accuracy = _optimizer_step(model, objective, batch, trainable, optimizer, group)
        scheduler.step()
        if not math.isfinite(loss):
            raise TrainingFailed(
                "training_diverged",
                f"Training stopped at step {progress.step + 1}: the loss is not a finite number "
                f"({loss}). Try a lower learning_rate_multiplier.",
            )
        progress.step += 1
        progress.trained_tokens += sum(objective.tokens(e) for e in batch)
        epoch_ended = progress.step % per_epoch == 0
        validated = _validate(
            model, objective, validation, progress.step, total, hp.batch_size, epoch_ended
        )
        progress.steps.append(StepMetrics(progress.step, total, loss, accuracy, **validated))
        hooks.on_step(progress.steps[-1])
        for signal in new_signals(progress.steps, hp.n_epochs):
            hooks.on_signal(signal)
        if epoch_ended and progress.step < total:
            folder = output_dir / f"step-{progress.step}"
            model.save_pretrained(str(folder))
            hooks.on_epoch_end(progress.steps[-1], folder)
        every = hooks.snapshot_every
        if epoch_ended or (every and progress.step % every == 0):
            _snapshot(output_dir, model, optimizer, scheduler, progress, hooks)
        reason = hooks.stop_reason() if group is None else group.agree(hooks.stop_reason())
        if reason is not None:
            if reason in ("pause", "shutdown") and not epoch_ended:
                _snapshot(output_dir, model, optimizer, scheduler, progress, hooks)
            raise TrainingStopped(reason, progress.step)
    if not all(bool(torch.isfinite(p).all()) for p in trainable):
        raise TrainingFailed(
            "invalid_adapter",
            "The trained adapter has weights that are not finite numbers, so it cannot be "
            "served. Try a lower learning_rate_multiplier.",
        )
    model.save_pretrained(str(output_dir / "final"))
    return TrainingResult(progress.steps, progress.trained_tokens, model)


def _optimizer_step(
    model: PeftModel,
    objective: Objective,
    batch: list[TrainingExample],
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    group: Group | None,
) -> tuple[float, float]:
    """One optimizer step over ``batch`` (of this rank's share, combined, in a data-parallel
    job); the step's loss and accuracy."""
    if group is None:
        loss, accuracy = objective.step(model, batch)
    else:
        share = group.share(batch)
        loss, accuracy = objective.step(model, share) if share else (0.0, 0.0)
        loss, accuracy = group.combine(trainable, loss, accuracy, objective.weight(share))
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, accuracy


def _validate(
    model: PeftModel,
    objective: Objective,
    validation: list[TrainingExample] | None,
    step: int,
    total: int,
    batch_size: int,
    epoch_ended: bool,
) -> dict[str, float]:
    """The validation figures due after ``step``: a batch that depends on the step alone (so a
    resumed run measures what an uninterrupted one would), and the whole set at epoch ends."""
    if not validation:
        return {}
    found: dict[str, float] = {}
    every = max(1, total // VALIDATION_EVERY)
    if step % every == 0 or step == total:
        start = (step // every - 1) * batch_size
        batch = [validation[(start + i) % len(validation)] for i in range(batch_size)]
        found["valid_loss"], found["valid_mean_token_accuracy"] = objective.evaluate(model, batch)
    if epoch_ended:
        loss, accuracy = objective.evaluate(model, validation)
        found["full_valid_loss"], found["full_valid_mean_token_accuracy"] = loss, accuracy
    return found


def _snapshot(
    folder: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: _Progress,
    hooks: TrainingHooks,
) -> None:
    path = folder / f"snapshot-{progress.step}.pt"
    state: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "step": progress.step,
        "trained_tokens": progress.trained_tokens,
        "steps": [asdict(m) for m in progress.steps],
    }
    torch.save(state, path)
    try:
        hooks.on_snapshot(progress.step, path)
    finally:
        path.unlink(missing_ok=True)


def _restore(
    path: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> _Progress:
    state = torch.load(path, weights_only=True)
    if state.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot {path.name} has format {state.get('format')}")
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    steps = [StepMetrics(**m) for m in state["steps"]]
    return _Progress(state["step"], state["trained_tokens"], steps)


def _lora_model(
    base: BaseModelConfig, start_from: Path | None = None, group: Group | None = None
) -> PeftModel:
    """The base with an adapter to train; in a data-parallel job, on this rank's GPU and
    starting from the leader's adapter weights."""
    placement = plan(base, Accelerator.detect(), None if group is None else group.rank)
    log.info("loading %s for training: %s", base.name, placement.describe())
    model = load_base(base, placement)
    if start_from is not None:  # its own LoRA configuration comes with it
        peft_model = PeftModel.from_pretrained(model, str(start_from), is_trainable=True)
    else:
        peft_model = get_peft_model(model, _lora_config(base))
    assert isinstance(peft_model, PeftModel)
    if group is not None:
        group.same_start([p for p in peft_model.parameters() if p.requires_grad])
    return peft_model


def _lora_config(base: BaseModelConfig) -> LoraConfig:
    return LoraConfig(
        r=base.lora_rank,
        lora_alpha=base.lora_alpha,
        target_modules=list(base.lora_target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
