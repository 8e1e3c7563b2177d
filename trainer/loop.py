"""The training loop: LoRA fine-tuning in plain torch over peft, supervised or DPO alike.

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
from torch.optim.lr_scheduler import LRScheduler
from transformers import get_linear_schedule_with_warmup

from service.settings import BaseModelConfig
from trainer.data_parallel import Group
from trainer.dataset import TrainingExample
from trainer.fused_lora import fuse_lora_layers
from trainer.objectives import Objective, TrainingFailed
from trainer.packed_weights import pack_frozen_linears
from trainer.placement import Accelerator, load_base, plan
from trainer.run import TrainingRun
from trainer.signals import Signal, new_signals

log = logging.getLogger("openft.trainer")
MAX_GRAD_NORM = 1.0
VALIDATION_EVERY = 10  # a validation batch at every tenth of the steps
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
    # What the objective found beyond these (RFT: per-grader scores, errors, sampled tokens).
    details: dict[str, Any] | None = None


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
    run: TrainingRun,
    *,
    output_dir: Path,
    hooks: TrainingHooks | None = None,
    group: Group | None = None,
) -> TrainingResult:
    """Train a LoRA adapter as ``run`` says and save it (PEFT format) to ``output_dir``.

    ``group``: this process's place in a data-parallel job (``trainer.data_parallel``): every
    rank calls this with the same run, trains on its share of each step and stops when the
    leader's hooks say so.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    training = _Training.begin(run, hooks or TrainingHooks(), output_dir, group)
    training.hooks.on_start()
    while training.progress.step < training.total:
        epoch_ended = training.step()
        training.report(epoch_ended)
        training.stop_if_asked(epoch_ended)
    return training.finish()


@dataclass
class _Training:
    """A run while it trains: its model, optimizer and progress, and where it reports."""

    run: TrainingRun
    hooks: TrainingHooks
    output_dir: Path
    group: Group | None
    objective: Objective
    model: PeftModel
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    progress: _Progress

    @classmethod
    def begin(
        cls, run: TrainingRun, hooks: TrainingHooks, output_dir: Path, group: Group | None
    ) -> _Training:
        """The model with its adapter, ready to take the run's next step (the first, or the
        one after its snapshot)."""
        objective = run.objective()
        torch.manual_seed(run.seed)
        model = _lora_model(run.base, run.start_from, group)
        trainable = [p for p in model.parameters() if p.requires_grad]
        lr = run.base.learning_rate * run.hp.learning_rate_multiplier
        optimizer = adamw(trainable, lr)
        total = run.hp.total_steps(len(run.examples))
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
        progress = _Progress()
        if run.resume_from is not None:
            progress = _restore(run.resume_from, model, optimizer, scheduler)
        model.train()
        return cls(
            run, hooks, output_dir, group, objective, model, trainable, optimizer, scheduler,
            progress,
        )  # fmt: skip

    @property
    def total(self) -> int:
        return self.run.hp.total_steps(len(self.run.examples))

    @property
    def per_epoch(self) -> int:
        return math.ceil(len(self.run.examples) / self.run.hp.batch_size)

    def step(self) -> bool:
        """Take the next optimizer step and record its metrics; whether it ended an epoch."""
        batch = self._next_batch()
        loss, accuracy = self._optimizer_step(batch)
        self.scheduler.step()
        if not math.isfinite(loss):
            raise TrainingFailed(
                "training_diverged",
                f"Training stopped at step {self.progress.step + 1}: the loss is not a finite "
                f"number ({loss}). Try a lower learning_rate_multiplier.",
            )
        progress = self.progress
        progress.step += 1
        progress.trained_tokens += sum(self.objective.tokens(e) for e in batch)
        epoch_ended = progress.step % self.per_epoch == 0
        validated = self._validate(epoch_ended)
        details = self.objective.step_details()
        progress.steps.append(
            StepMetrics(progress.step, self.total, loss, accuracy, **validated, details=details)
        )
        return epoch_ended

    def report(self, epoch_ended: bool) -> None:
        """Tell the hooks of the step just taken: its metrics, new signals, an epoch's adapter,
        and a snapshot when one is due."""
        progress, hooks = self.progress, self.hooks
        hooks.on_step(progress.steps[-1])
        # The loss signals read supervised losses; GRPO's loss hovers near 0 by construction.
        signals = new_signals(progress.steps, self.run.hp.n_epochs)
        for signal in signals if self.run.reinforcement is None else []:
            hooks.on_signal(signal)
        if self._publishes(epoch_ended) and progress.step < self.total:
            folder = self.output_dir / f"step-{progress.step}"
            self.model.save_pretrained(str(folder))
            hooks.on_epoch_end(progress.steps[-1], folder)
        every = hooks.snapshot_every
        if epoch_ended or (every and progress.step % every == 0):
            self.snapshot()

    def _publishes(self, epoch_ended: bool) -> bool:
        """Whether the step just taken publishes a checkpoint: at epoch ends, or, when the run
        fixes its validation steps (RFT), at each of those (OpenAI keeps the best of them)."""
        if self.run.validate_every is None:
            return epoch_ended
        return self.progress.steps[-1].full_valid_mean_token_accuracy is not None

    def stop_if_asked(self, epoch_ended: bool) -> None:
        """Stop (every rank, as the leader's hooks say) after a snapshot where one is due."""
        reason = self.hooks.stop_reason()
        if self.group is not None:
            reason = self.group.agree(reason)
        if reason is not None:
            if reason in ("pause", "shutdown") and not epoch_ended:
                self.snapshot()
            raise TrainingStopped(reason, self.progress.step)

    def finish(self) -> TrainingResult:
        """Save the trained adapter (when it can be served) to the ``final`` folder."""
        if not all(bool(torch.isfinite(p).all()) for p in self.trainable):
            raise TrainingFailed(
                "invalid_adapter",
                "The trained adapter has weights that are not finite numbers, so it cannot be "
                "served. Try a lower learning_rate_multiplier.",
            )
        self.model.save_pretrained(str(self.output_dir / "final"))
        return TrainingResult(self.progress.steps, self.progress.trained_tokens, self.model)

    def snapshot(self) -> None:
        """Write what resuming needs after the current step, hand it to the hooks, delete it."""
        progress = self.progress
        path = self.output_dir / f"snapshot-{progress.step}.pt"
        state: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "adapter": get_peft_model_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": progress.step,
            "trained_tokens": progress.trained_tokens,
            "steps": [asdict(m) for m in progress.steps],
        }
        torch.save(state, path)
        try:
            self.hooks.on_snapshot(progress.step, path)
        finally:
            path.unlink(missing_ok=True)

    def _next_batch(self) -> list[TrainingExample]:
        epoch, position = divmod(self.progress.step, self.per_epoch)
        examples, size = self.run.examples, self.run.hp.batch_size
        order = epoch_order(self.run.seed, epoch, len(examples))
        start = position * size
        return [examples[i] for i in order[start : start + size]]

    def _optimizer_step(self, batch: list[TrainingExample]) -> tuple[float, float]:
        """One optimizer step over ``batch`` (of this rank's share, combined, in a data-parallel
        job); the step's loss and accuracy."""
        objective, group, trainable = self.objective, self.group, self.trainable
        if group is None:
            loss, accuracy = objective.step(self.model, batch)
        else:
            share = group.share(batch)
            loss, accuracy = objective.step(self.model, share) if share else (0.0, 0.0)
            loss, accuracy = group.combine(trainable, loss, accuracy, objective.weight(share))
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, accuracy

    def _validate(self, epoch_ended: bool) -> dict[str, float]:
        """The validation figures due after the step just taken: a batch that depends on the
        step alone (so a resumed run measures what an uninterrupted one would), and the whole
        set at epoch ends."""
        validation, step, total = self.run.validation, self.progress.step, self.total
        if not validation:
            return {}
        if self.run.validate_every is not None:  # the whole set, every so many steps
            if step % self.run.validate_every and step != total:
                return {}
            loss, accuracy = self.objective.evaluate(self.model, validation)
            return {
                "valid_loss": loss,
                "valid_mean_token_accuracy": accuracy,
                "full_valid_loss": loss,
                "full_valid_mean_token_accuracy": accuracy,
            }
        found: dict[str, float] = {}
        every = max(1, total // VALIDATION_EVERY)
        if step % every == 0 or step == total:
            size = self.run.hp.batch_size
            start = (step // every - 1) * size
            batch = [validation[(start + i) % len(validation)] for i in range(size)]
            loss, accuracy = self.objective.evaluate(self.model, batch)
            found["valid_loss"], found["valid_mean_token_accuracy"] = loss, accuracy
        if epoch_ended:
            loss, accuracy = self.objective.evaluate(self.model, validation)
            found["full_valid_loss"], found["full_valid_mean_token_accuracy"] = loss, accuracy
        return found


def _restore(
    path: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: LRScheduler
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
    """The base with an adapter to train (its LoRA layers ``trainer.fused_lora``'s, its frozen
    weights packed by ``trainer.packed_weights`` on a CPU); in a data-parallel job, on this
    rank's GPU and starting from the leader's adapter weights."""
    placement = plan(base, Accelerator.detect(), None if group is None else group.rank)
    log.info("loading %s for training: %s", base.name, placement.describe())
    model = load_base(base, placement)
    if start_from is not None:  # its own LoRA configuration comes with it
        peft_model = PeftModel.from_pretrained(model, str(start_from), is_trainable=True)
    else:
        peft_model = get_peft_model(model, _lora_config(base))
    assert isinstance(peft_model, PeftModel)
    fuse_lora_layers(peft_model)
    packed = pack_frozen_linears(peft_model)
    if packed:
        log.info("%d frozen linear layers multiply by oneDNN-packed weights", packed)
    if group is not None:
        group.same_start([p for p in peft_model.parameters() if p.requires_grad])
    return peft_model


def adamw(parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step where torch has one (CPU and CUDA): an adapter on
    every linear layer is hundreds of small matrices, and the per-matrix loop of the default
    implementation costs more than the update on a CPU. Same update, as TRL's default optimizer
    (transformers' ``adamw_torch_fused``)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, lr=lr, fused=fused or None)


def _lora_config(base: BaseModelConfig) -> LoraConfig:
    return LoraConfig(
        r=base.lora_rank,
        lora_alpha=base.lora_alpha,
        target_modules=list(base.lora_target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
