"""How a job's step metrics are written down: event texts and data, checkpoint metrics, CSV."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from service.ids import new_file_id
from trainer.loop import StepMetrics, TrainingResult

RESULT_COLUMNS = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


@dataclass(frozen=True)
class ResultFile:
    """A job's results file (``step_metrics.csv``), base64-encoded as OpenAI serves it."""

    id: str
    content: bytes

    @classmethod
    def of(cls, result: TrainingResult) -> ResultFile:
        return cls(new_file_id(), base64.b64encode(result_csv(result)))


def step_message(metrics: StepMetrics) -> str:
    """OpenAI's text: ``Step 3/30: training loss=0.52, validation loss=0.61, full validation
    loss=0.64`` (the validation parts only on steps that measured them)."""
    parts = [f"training loss={metrics.train_loss:.2f}"]
    if metrics.valid_loss is not None:
        parts.append(f"validation loss={metrics.valid_loss:.2f}")
    if metrics.full_valid_loss is not None:
        parts.append(f"full validation loss={metrics.full_valid_loss:.2f}")
    return f"Step {metrics.step}/{metrics.total_steps}: " + ", ".join(parts)


def metrics_data(metrics: StepMetrics) -> dict[str, float | int]:
    """The ``data`` of a step's event."""
    return {
        "step": metrics.step,
        "train_loss": metrics.train_loss,
        "total_steps": metrics.total_steps,
        "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
        **_validation_figures(metrics),
    }


def checkpoint_metrics(
    metrics: StepMetrics, method: str, *, overfitting: bool = False
) -> dict[str, float | int | str | bool]:
    """OpenAI's figures, the method, and ``overfitting: true`` on the checkpoints published
    after the job warned of it (OpenAI's spec lets ``metrics`` carry more keys)."""
    return {
        "step": metrics.step,
        "train_loss": metrics.train_loss,
        "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
        **_validation_figures(metrics),
        "type": method,
        **({"overfitting": True} if overfitting else {}),
    }


def result_csv(result: TrainingResult) -> bytes:
    """OpenAI's columns; the validation ones are empty on steps without a validation batch."""

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.5f}"

    rows = [RESULT_COLUMNS] + [
        f"{m.step},{m.train_loss:.5f},{m.train_mean_token_accuracy:.5f},"
        f"{cell(m.valid_loss)},{cell(m.valid_mean_token_accuracy)}"
        for m in result.steps
    ]
    return ("\n".join(rows) + "\n").encode()


def _validation_figures(metrics: StepMetrics) -> dict[str, float]:
    """The validation figures a step has (none without a validation file)."""
    figures = {
        "valid_loss": metrics.valid_loss,
        "valid_mean_token_accuracy": metrics.valid_mean_token_accuracy,
        "full_valid_loss": metrics.full_valid_loss,
        "full_valid_mean_token_accuracy": metrics.full_valid_mean_token_accuracy,
    }
    return {name: value for name, value in figures.items() if value is not None}
