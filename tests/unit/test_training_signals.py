"""Overfitting and underfitting signals found in a job's step metrics (trainer/signals.py)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.signals import (
    OVERFITTING_OPENING,
    UNDERFITTING_OPENING,
    Signal,
    new_signals,
    overfitting,
)


@dataclass(frozen=True)
class Step:
    step: int
    total_steps: int
    train_loss: float
    valid_loss: float | None = None
    full_valid_loss: float | None = None


def epochs(train: Sequence[float], full_valid: Sequence[float], per_epoch: int = 4) -> list[Step]:
    """One training loss per epoch (every step of it) and the full validation loss at its end."""
    total = per_epoch * len(train)
    return [
        Step(
            epoch * per_epoch + i + 1,
            total,
            loss,
            full_valid_loss=valid if i == per_epoch - 1 else None,
        )
        for epoch, (loss, valid) in enumerate(zip(train, full_valid, strict=True))
        for i in range(per_epoch)
    ]


def batches(train: Sequence[float], valid: Sequence[float], per_eval: int = 3) -> list[Step]:
    """One epoch; a batch validation loss every ``per_eval`` steps."""
    total = per_eval * len(train)
    return [
        Step(n * per_eval + i + 1, total, loss, valid_loss=v if i == per_eval - 1 else None)
        for n, (loss, v) in enumerate(zip(train, valid, strict=True))
        for i in range(per_eval)
    ]


def as_run(history: Sequence[Step], n_epochs: int, resumed_at: int = 0) -> list[Signal]:
    """Every signal found step by step, as the training loop asks after each step; a run resumed
    from a snapshot starts with the history up to its step restored."""
    return [
        signal
        for n in range(max(1, resumed_at + 1), len(history) + 1)
        for signal in new_signals(history[:n], n_epochs)
    ]


FALLING_TRAIN = [2.0, 1.2, 0.8, 0.5, 0.3, 0.2, 0.1]
OVERFIT_VALID = [2.1, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0]


def test_rising_full_validation_while_training_falls_is_found_once() -> None:
    history = epochs(FALLING_TRAIN, OVERFIT_VALID)

    (signal,) = as_run(history, 7)

    # Epochs 2 -> 5 (steps 8 -> 20): three rises in a row, while training went 1.2 -> 0.3.
    assert (signal.kind, signal.step) == ("overfitting", 20)
    assert signal.message == (
        "Validation loss has risen for 3 evaluations while training loss fell: the model may be "
        "overfitting; consider fewer epochs. From step 8 to step 20 the full validation loss "
        "went 1.50 → 1.80 and the training loss 1.20 → 0.30."
    )
    assert signal.message.startswith(OVERFITTING_OPENING)


def test_two_rises_are_not_enough() -> None:
    history = epochs(FALLING_TRAIN[:5], OVERFIT_VALID[:5])  # 1.5 -> 1.6 -> 1.7 -> 1.8: 3 rises
    assert [s.step for s in as_run(history, 5)] == [20]
    assert as_run(history[:16], 5) == []  # 1.5 -> 1.6 -> 1.7: 2 rises


def test_a_rise_interrupted_by_a_dip_starts_counting_again() -> None:
    valid = [2.1, 1.5, 1.6, 1.55, 1.7, 1.8, 1.9]
    assert [s.step for s in as_run(epochs(FALLING_TRAIN, valid), 7)] == [28]


def test_rising_validation_with_rising_training_loss_is_not_overfitting() -> None:
    train = [2.0, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]  # diverging, not memorising
    assert as_run(epochs(train, OVERFIT_VALID), 7) == []


def test_a_negligible_rise_of_the_full_validation_loss_is_not_reported() -> None:
    valid = [2.1, 1.500, 1.501, 1.502, 1.503, 1.504, 1.505]  # rising, by 0.3% in all
    assert as_run(epochs(FALLING_TRAIN, valid), 7) == []


def test_noisy_but_flat_batch_validation_is_not_overfitting() -> None:
    # Raw batch losses that rise three times in a row (as rotating batches do by chance) but
    # hover around one level: the moving average does not climb enough.
    valid = [1.00, 0.97, 1.02, 0.95, 0.96, 0.99, 1.03, 0.98, 1.01, 0.96, 1.00, 1.02]
    train = [2.0 - 0.15 * n for n in range(len(valid))]
    assert as_run(batches(train, valid), 1) == []
    noise = random.Random(16)
    for _ in range(50):
        valid = [1.0 + noise.uniform(-0.03, 0.03) for _ in range(11)]
        assert as_run(batches(train[:11], valid), 1) == []


def test_a_climbing_batch_validation_loss_is_found_within_one_epoch() -> None:
    valid = [2.0, 1.6, 1.4, 1.3, 1.35, 1.45, 1.6, 1.8, 2.0, 2.2]
    train = [2.0 - 0.18 * n for n in range(len(valid))]

    (signal,) = as_run(batches(train, valid), 1)

    assert signal.kind == "overfitting"
    assert "validation loss (averaged)" in signal.message
    assert signal.step % 3 == 0  # at a batch evaluation


def test_a_job_of_more_than_3_epochs_is_judged_on_its_full_validation_loss_only() -> None:
    # Rotating batches that climb while the whole file's loss stays level: no signal.
    flat_full = [2.1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]
    history = [
        Step(s.step, s.total_steps, s.train_loss, valid_loss=OVERFIT_VALID[s.step // 4 - 1])
        if s.full_valid_loss is not None
        else s
        for s in epochs(FALLING_TRAIN, flat_full)
    ]
    assert overfitting(history, epochs=3) is not None  # what the batch series alone would say
    assert as_run(history, len(flat_full)) == []


def test_a_resumed_run_finds_a_signal_only_if_its_snapshot_came_before_it() -> None:
    history = epochs(FALLING_TRAIN, OVERFIT_VALID)
    (uninterrupted,) = as_run(history, 7)

    # The snapshot already holds the step where it was found: nothing is found again.
    assert as_run(history, 7, resumed_at=20) == []
    assert as_run(history, 7, resumed_at=24) == []
    # The snapshot is older: the same signal, word for word, at the same step (the worker
    # keeps one event per job for it, so a signal emitted before a crash is not repeated).
    assert as_run(history, 7, resumed_at=16) == [uninterrupted]


def flat(n: int, level: float = 2.5, wobble: float = 0.02) -> list[Step]:
    return [Step(s, n, level + (wobble if s % 2 else -wobble)) for s in range(1, n + 1)]


def test_a_training_loss_that_barely_moves_is_underfitting_at_the_end() -> None:
    history = flat(40)

    (signal,) = as_run(history, 1)

    assert (signal.kind, signal.step) == ("underfitting", 40)
    assert signal.message == (
        "Training loss has barely moved (2.50 → 2.50): the model may be underfitting; consider "
        "more epochs or a higher learning_rate_multiplier"
    )
    assert signal.message.startswith(UNDERFITTING_OPENING)


def test_a_learning_curve_is_not_underfitting() -> None:
    falling = [Step(s, 40, 2.5 * 0.97**s) for s in range(1, 41)]  # -70%
    assert as_run(falling, 1) == []
    slow = [Step(s, 40, 2.5 - 0.004 * s) for s in range(1, 41)]  # -6%: slow, but moving
    assert as_run(slow, 1) == []


def test_underfitting_needs_enough_steps_and_a_loss_left_to_lose() -> None:
    assert as_run(flat(19), 1) == []
    assert as_run(flat(40, level=0.05, wobble=0.0), 1) == []  # already learned (a continued job)
