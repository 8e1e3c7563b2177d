"""Overfitting and underfitting signals: pure rules over a job's step metrics so far.

The rules read nothing but the metrics history, which a resumed run restores from its snapshot,
so a signal is found at the same step whether or not the run was interrupted, and only there.

Overfitting is judged on one validation series, chosen by the job's number of epochs:

- with more than K epochs, the full validation loss, measured on the whole validation file at
  each epoch end: the same examples every time, so a rise is real (one under ``FULL_MIN_RISE`` is
  too small to act on);
- with K epochs or fewer, which cannot show K rises of it, the batch validation loss, measured at
  every tenth of the steps on a batch that rotates through the file. One batch is not the next,
  so it is smoothed by a moving average over ``BATCH_SMOOTHING`` evaluations and must rise by more
  than a full-set rise before it counts. It is not used when the full loss can answer: the
  rotation repeats every (validation examples / batch size) evaluations, which the average does
  not cancel, and on the demo model's plateau that alone made it "rise" while the full loss
  stayed flat.

The series must have risen at each of its last K evaluations (and by ``min_rise`` over them),
while the mean training loss over the steps leading to the last evaluation is below the mean
over the steps leading to the first: the model keeps fitting its training data better and
unseen data worse. The training loss is compared as a mean over steps because one step's loss
depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import fmean
from typing import Literal, Protocol

OVERFITTING_RISES = 3  # K: consecutive rising validation evaluations
FULL_MIN_RISE = 0.02  # relative rise of the full validation loss over the K evaluations
BATCH_MIN_RISE = 0.05  # the same for the smoothed batch validation loss (it is noisier)
BATCH_SMOOTHING = 3  # batch validation evaluations per moving-average point
UNDERFITTING_MIN_STEPS = 20  # fewer steps: a tenth of them is too few to average
UNDERFITTING_MAX_CHANGE = 0.02  # the last tenth's mean training loss within 2% of the first's
UNDERFITTING_LOSS_FLOOR = 0.1  # a loss this low is already learned, not stuck

OVERFITTING_OPENING = (
    f"Validation loss has risen for {OVERFITTING_RISES} evaluations while training loss fell"
)
UNDERFITTING_OPENING = "Training loss has barely moved"


class Measured(Protocol):
    """What the rules read of one step's metrics (``trainer.loop.StepMetrics`` has it)."""

    @property
    def step(self) -> int: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def train_loss(self) -> float: ...
    @property
    def valid_loss(self) -> float | None: ...
    @property
    def full_valid_loss(self) -> float | None: ...


@dataclass(frozen=True)
class Signal:
    kind: Literal["overfitting", "underfitting"]
    step: int  # the step at which it was found
    message: str

    @property
    def opening(self) -> str:
        """How its message begins, whatever its numbers: one such warning is kept a job."""
        return OVERFITTING_OPENING if self.kind == "overfitting" else UNDERFITTING_OPENING


@dataclass(frozen=True)
class _Point:
    step: int
    valid: float
    train: float  # mean training loss over the steps since the previous point


def new_signals(history: Sequence[Measured], epochs: int) -> list[Signal]:
    """The signals first found at the newest step of ``history`` (each is found once a job), in
    a job of ``epochs`` epochs."""
    if not history:
        return []
    newest = history[-1]
    found = []
    if newest.valid_loss is not None or newest.full_valid_loss is not None:
        overfit = overfitting(history, epochs)
        if overfit is not None and overfit.step == newest.step:
            found.append(overfit)
    if newest.step == newest.total_steps:
        underfit = underfitting(history)
        if underfit is not None:
            found.append(underfit)
    return found


def overfitting(history: Sequence[Measured], epochs: int) -> Signal | None:
    """The first evaluation at which the job's validation series shows overfitting, if any."""
    if epochs > OVERFITTING_RISES:
        full = [(m.step, m.full_valid_loss) for m in history if m.full_valid_loss is not None]
        return _first_rise(_points(history, full), FULL_MIN_RISE, "full validation loss")
    batch = _moving_average(
        [(m.step, m.valid_loss) for m in history if m.valid_loss is not None], BATCH_SMOOTHING
    )
    return _first_rise(_points(history, batch), BATCH_MIN_RISE, "validation loss (averaged)")


def underfitting(history: Sequence[Measured]) -> Signal | None:
    """At the end of a job: whether its training loss barely moved from its first tenth."""
    if len(history) < UNDERFITTING_MIN_STEPS:
        return None
    tenth = len(history) // 10
    first = fmean(m.train_loss for m in history[:tenth])
    last = fmean(m.train_loss for m in history[-tenth:])
    if last < UNDERFITTING_LOSS_FLOOR or abs(last - first) > UNDERFITTING_MAX_CHANGE * first:
        return None
    message = (
        f"{UNDERFITTING_OPENING} ({first:.2f} → {last:.2f}): the model may be underfitting; "
        "consider more epochs or a higher learning_rate_multiplier"
    )
    return Signal("underfitting", history[-1].step, message)


def _moving_average(series: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    return [
        (series[i][0], fmean(value for _, value in series[i - window + 1 : i + 1]))
        for i in range(window - 1, len(series))
    ]


def _points(history: Sequence[Measured], series: list[tuple[int, float]]) -> list[_Point]:
    """Each evaluation with the mean training loss of the steps since the one before."""
    points, previous = [], 0
    train = {m.step: m.train_loss for m in history}
    for step, valid in series:
        span = [train[s] for s in range(previous + 1, step + 1) if s in train]
        points.append(_Point(step, valid, fmean(span) if span else train.get(step, 0.0)))
        previous = step
    return points


def _first_rise(points: list[_Point], min_rise: float, name: str) -> Signal | None:
    k = OVERFITTING_RISES
    for j in range(k, len(points)):
        span = points[j - k : j + 1]
        rising = all(later.valid > earlier.valid for earlier, later in pairwise(span))
        start, end = span[0], span[-1]
        if rising and end.valid >= start.valid * (1 + min_rise) and end.train < start.train:
            message = (
                f"{OVERFITTING_OPENING}: the model may be overfitting; consider fewer epochs. "
                f"From step {start.step} to step {end.step} the {name} went "
                f"{start.valid:.2f} → {end.valid:.2f} and the training loss "
                f"{start.train:.2f} → {end.train:.2f}."
            )
            return Signal("overfitting", end.step, message)
    return None
