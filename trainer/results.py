"""How a job's step metrics are written down: event texts and data, checkpoint metrics, CSV."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from service.ids import new_file_id
from trainer.loop import StepMetrics, TrainingResult

RESULT_COLUMNS = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
REINFORCEMENT_COLUMNS = "step,train_loss,train_reward_mean,valid_reward_mean,completion_tokens_mean"


@dataclass(frozen=True)
class ResultFile:
    """A job's results file (``step_metrics.csv``), base64-encoded as OpenAI serves it."""

    id: str
    content: bytes

    @classmethod
    def of(cls, result: TrainingResult, method: str = "supervised") -> ResultFile:
        return cls(new_file_id(), base64.b64encode(result_csv(result, method)))


def step_message(metrics: StepMetrics, method: str = "supervised") -> str:
    """OpenAI's text: ``Step 3/30: training loss=0.52, validation loss=0.61, full validation
    loss=0.64`` (the validation parts only on steps that measured them); for RFT, ``Step 10/20 ,
    train mean reward=0.42, full validation mean reward=0.68`` (its odd space too)."""
    if method == "reinforcement":
        parts = [f"train mean reward={metrics.train_mean_token_accuracy:.2f}"]
        if metrics.full_valid_mean_token_accuracy is not None:
            parts.append(
                f"full validation mean reward={metrics.full_valid_mean_token_accuracy:.2f}"
            )
        return f"Step {metrics.step}/{metrics.total_steps} , " + ", ".join(parts)
    parts = [f"training loss={metrics.train_loss:.2f}"]
    if metrics.valid_loss is not None:
        parts.append(f"validation loss={metrics.valid_loss:.2f}")
    if metrics.full_valid_loss is not None:
        parts.append(f"full validation loss={metrics.full_valid_loss:.2f}")
    return f"Step {metrics.step}/{metrics.total_steps}: " + ", ".join(parts)


def metrics_data(metrics: StepMetrics, method: str = "supervised") -> dict[str, Any]:
    """The ``data`` of a step's event (RFT's: OpenAI's reward figures and breakdowns)."""
    if method == "reinforcement":
        return _reinforcement_data(metrics)
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
    if method == "reinforcement":
        return {
            "step": metrics.step,
            "train_loss": metrics.train_loss,
            "train_reward_mean": metrics.train_mean_token_accuracy,
            **_rewards(metrics),
            "type": method,
        }
    return {
        "step": metrics.step,
        "train_loss": metrics.train_loss,
        "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
        **_validation_figures(metrics),
        "type": method,
        **({"overfitting": True} if overfitting else {}),
    }


def result_csv(result: TrainingResult, method: str = "supervised") -> bytes:
    """OpenAI's columns; the validation ones are empty on steps without a validation batch.
    An RFT job's carry its rewards and the mean length of its sampled answers."""

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.5f}"

    if method == "reinforcement":
        rows = [REINFORCEMENT_COLUMNS] + [
            f"{m.step},{m.train_loss:.5f},{m.train_mean_token_accuracy:.5f},"
            f"{cell(m.full_valid_mean_token_accuracy)},"
            f"{cell((m.details or {}).get('completion_tokens_mean'))}"
            for m in result.steps
        ]
        return ("\n".join(rows) + "\n").encode()

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


def _rewards(metrics: StepMetrics) -> dict[str, float]:
    valid = metrics.full_valid_mean_token_accuracy
    return {} if valid is None else {"valid_reward_mean": valid, "full_valid_mean_reward": valid}


def _reinforcement_data(metrics: StepMetrics) -> dict[str, Any]:
    """OpenAI's RFT metrics event: ``train_mean_reward``, ``full_valid_mean_reward`` at
    validation steps, ``scores`` with per-grader means, ``errors``, ``timing``, sampled tokens
    and the judge models' tokens."""
    details = metrics.details or {}
    valid = metrics.full_valid_mean_token_accuracy
    scores = {
        "train_reward_mean": metrics.train_mean_token_accuracy,
        **({"valid_reward_mean": valid} if valid is not None else {}),
        **details.get("scores", {}),
    }
    return {
        "step": metrics.step,
        "total_steps": metrics.total_steps,
        "train_loss": metrics.train_loss,
        "train_mean_reward": metrics.train_mean_token_accuracy,
        **({"full_valid_mean_reward": valid} if valid is not None else {}),
        "completion_tokens_mean": details.get("completion_tokens_mean"),
        "scores": scores,
        "errors": details.get("errors", {}),
        "timing": {"step": details.get("timing", {})},
        "model_graders_token_usage": details.get("model_graders_token_usage", {}),
    }
