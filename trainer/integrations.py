"""Where a job's metrics go besides its events: the W&B and MLflow runs its ``integrations``
name (``service.jobs.integrations`` checked them). Only the worker that leads a job logs. An
integration that fails never fails the job: it is turned off for the rest of the job, which says
so once in a ``warn`` event."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from service.queue import Claim
from service.settings import Settings
from trainer.loop import StepMetrics
from trainer.results import metrics_data

log = logging.getLogger("openft.integrations")
NOT_FIGURES = ("step", "total_steps")


def failure_opening(kind: str) -> str:
    """How a job's warning about a failed integration begins (written once per job)."""
    return f"The {kind} integration failed"


class Tracker(Protocol):
    kind: str

    def log(self, step: int, figures: dict[str, float]) -> None: ...

    def finish(self, fine_tuned_model: str | None) -> None: ...


class JobTrackers:
    """The job's open integrations; ``warn`` records a failure's event."""

    def __init__(
        self, claim: Claim, hyperparameters: dict[str, Any], settings: Settings,
        warn: Callable[[str, str], None],
    ) -> None:  # fmt: skip
        self.method = claim.method["type"]
        self.warn = warn
        self.open: list[Tracker] = []
        for item in claim.integrations:
            kind = item["type"]
            try:
                self.open.append(OPENERS[kind](item[kind], claim, hyperparameters, settings))
            except Exception as exc:
                self._failed(kind, exc)

    def log(self, metrics: StepMetrics) -> None:
        figures = flat_figures(metrics_data(metrics, self.method))
        for tracker in list(self.open):
            try:
                tracker.log(metrics.step, figures)
            except Exception as exc:
                self.open.remove(tracker)
                self._failed(tracker.kind, exc)

    def finish(self, fine_tuned_model: str | None) -> None:
        """Close every run: the job succeeded with ``fine_tuned_model``, or (None) it did not."""
        for tracker in self.open:
            try:
                tracker.finish(fine_tuned_model)
            except Exception as exc:
                self._failed(tracker.kind, exc)
        self.open.clear()

    def _failed(self, kind: str, exc: Exception) -> None:
        log.warning("the %s integration failed; turned off for this job", kind, exc_info=exc)
        message = (
            f"{failure_opening(kind)} and is off for the rest of this job; training goes on. "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        )
        try:
            self.warn(failure_opening(kind), message)
        except Exception:  # the job is no longer ours (cancelled, paused): nobody to tell
            log.warning("could not record that the %s integration failed", kind, exc_info=True)


def flat_figures(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics event, nested keys joined with ``/`` (RFT's breakdowns)."""
    figures: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            figures.update(flat_figures(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            figures[name] = float(value)
    for name in NOT_FIGURES:
        figures.pop(name, None)
    return figures


def job_fields(claim: Claim) -> dict[str, Any]:
    """The job's fields a run records beside its hyperparameters (OpenAI's W&B config, and the
    method)."""
    return {
        "model": claim.model,
        "training_file": claim.training_file,
        "validation_file": claim.validation_file,
        "seed": claim.seed,
        "method": claim.method["type"],
        "suffix": claim.suffix,
    }


class WandbRun:
    """A W&B run named by the job's id (resumed, not duplicated, after a crash), with OpenAI's
    default tags; WANDB_API_KEY, WANDB_BASE_URL and WANDB_MODE are the operator's."""

    kind = "wandb"

    def __init__(
        self, spec: dict[str, Any], claim: Claim, hyperparameters: dict[str, Any],
        settings: Settings,
    ) -> None:  # fmt: skip
        import wandb  # the worker's: the API process never loads it

        folder = settings.wandb_dir or settings.data_dir  # W&B writes into its wandb/ folder
        folder.mkdir(parents=True, exist_ok=True)
        tags = ["openai/finetune", f"openai/{claim.model}", f"openai/{claim.job_id}"]
        self.run = wandb.init(
            project=spec["project"],
            entity=spec.get("entity"),
            name=spec.get("name") or claim.job_id,
            id=claim.job_id,
            resume="allow",
            reinit="create_new",
            tags=[*tags, *spec.get("tags", [])],
            config={**job_fields(claim), "hyperparameters": hyperparameters},
            dir=str(folder),
            mode=settings.wandb_mode,
            settings=wandb.Settings(
                api_key=settings.wandb_api_key,
                console="off",
                silent=True,
                disable_git=True,
                save_code=False,
                x_disable_stats=True,
                x_disable_machine_info=True,
                x_save_requirements=False,
                init_timeout=60,
            ),
        )

    def log(self, step: int, figures: dict[str, float]) -> None:
        self.run.log(figures, step=step)

    def finish(self, fine_tuned_model: str | None) -> None:
        if fine_tuned_model is not None:
            self.run.summary["fine_tuned_model"] = fine_tuned_model
            self.run.config.update({"fine_tuned_model": fine_tuned_model}, allow_val_change=True)
        self.run.finish(exit_code=0 if fine_tuned_model is not None else 1)


class MlflowRun:
    """An MLflow run in the integration's experiment, found again by its ``openft.job_id`` tag
    after a crash; the tracking URI is the operator's (OPENFT_MLFLOW_TRACKING_URI)."""

    kind = "openft_mlflow"

    def __init__(
        self, spec: dict[str, Any], claim: Claim, hyperparameters: dict[str, Any],
        settings: Settings,
    ) -> None:  # fmt: skip
        from mlflow import MlflowClient  # the worker's: the API process never loads it

        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        name = spec["experiment_name"]
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`openft.job_id` = '{claim.job_id}'", max_results=1
        )
        if found:
            self.run_id = found[0].info.run_id
            return
        tags = {
            **spec.get("tags", {}),
            "openft.job_id": claim.job_id,
            "openft.base_model": claim.model,
        }
        run = self.client.create_run(
            experiment_id, run_name=spec.get("run_name") or claim.job_id, tags=tags
        )
        self.run_id = run.info.run_id
        params = {**job_fields(claim), **hyperparameters}
        self._batch(params=params)

    def log(self, step: int, figures: dict[str, float]) -> None:
        self._batch(figures=figures, step=step)

    def finish(self, fine_tuned_model: str | None) -> None:
        if fine_tuned_model is not None:
            self.client.set_tag(self.run_id, "fine_tuned_model", fine_tuned_model)
        self.client.set_terminated(self.run_id, "FINISHED" if fine_tuned_model else "FAILED")

    def _batch(
        self, *, params: dict[str, Any] | None = None, figures: dict[str, float] | None = None,
        step: int = 0,
    ) -> None:  # fmt: skip
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, step) for k, v in (figures or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
        )


OPENERS: dict[str, Callable[[dict[str, Any], Claim, dict[str, Any], Settings], Tracker]] = {
    "wandb": WandbRun,
    "openft_mlflow": MlflowRun,
}
