"""A job's ledger: every database write the worker makes for a job, with OpenAI's event texts."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import job_records, queue
from service.datasets.validator import ValidationReport
from service.db.database import Database
from service.db.models import File, FineTuningJob, FineTuningJobCheckpoint
from service.drift import PromptProfile
from service.ids import new_fine_tuned_model_name
from service.queue import Claim
from service.settings import BaseModelConfig, Settings
from service.usage import add_usage
from trainer.dataset import summary_events
from trainer.faults import fault_point
from trainer.forgetting import ForgettingCheck
from trainer.hyperparameters import Hyperparameters
from trainer.loop import StepMetrics, TrainingResult
from trainer.results import ResultFile, checkpoint_metrics, metrics_data, step_message
from trainer.signals import OVERFITTING_OPENING, Signal

FILES_VALIDATED = "Files validated, moving job to queued state"
FINISHED = (None, "succeeded", "failed", "cancelled")  # None: the job is gone
# While training, a step's records are kept also when the job was paused (and resumed) meanwhile.
TRAINING = ("running", "paused", "queued")


def job_finished(db: Database, job_id: str) -> bool:
    """Whether the job has ended (or is gone), so that nothing will resume it."""
    with db.read() as session:
        status = session.scalar(select(FineTuningJob.status).where(FineTuningJob.id == job_id))
    return status in FINISHED


class Pace:
    """When the job will finish, from the pace of the steps this worker has taken so far."""

    def __init__(self, first_step: int) -> None:
        self.first_step = first_step
        self.started = time.monotonic()

    def finish(self, step: int, total: int) -> int:
        per_step = (time.monotonic() - self.started) / max(1, step - self.first_step)
        return int(time.time() + per_step * (total - step))


class JobLedger:
    """The claimed job's rows: its status, events, checkpoints, results file and usage."""

    def __init__(self, db: Database, claim: Claim, settings: Settings) -> None:
        self.db, self.claim, self.settings = db, claim, settings

    def validated(
        self, report: ValidationReport, hp: Hyperparameters, base: BaseModelConfig
    ) -> None:
        """Say what the files hold, once per job, and move it from validating_files to queued."""
        with queue.held(self.db, self.claim, "validating_files", "queued") as (session, job):
            if job_records.has_event(session, job.id, FILES_VALIDATED):
                return
            for message in summary_events(report, hp.n_epochs, base):
                job_records.add_event(session, job, message)
            if job.status == "validating_files":
                queue.transition(job, "queued")
            job_records.add_event(session, job, FILES_VALIDATED)
        fault_point("after_validation")

    def started(self, hp: Hyperparameters, resumed_at: int | None) -> None:
        """queued -> running, with the resolved hyperparameters written back to the job."""
        with queue.held(self.db, self.claim, "queued") as (session, job):
            queue.transition(job, "running")
            kind = self.claim.method["type"]
            # The method's other fields (an RFT job's grader) stay as the job was created.
            job.method = {"type": kind, kind: {**job.method[kind], "hyperparameters": hp.as_dict()}}
            if resumed_at is not None:
                message = f"Fine-tuning job resumed from step {resumed_at}"
            elif job_records.has_event(session, job.id, "Fine-tuning job started"):
                message = "Fine-tuning job restarted from the beginning"
            else:
                message = "Fine-tuning job started"
            job_records.add_event(session, job, message)

    def stop_reason(self) -> str | None:
        """Why the job should stop now (cancelled, paused), if it should."""
        return queue.stop_reason(self.db, self.claim)

    def record_step(self, metrics: StepMetrics, pace: Pace) -> None:
        """The step's event (OpenAI's metrics) and the job's estimated finish."""
        with queue.held(self.db, self.claim, *TRAINING) as (session, job):
            job.estimated_finish = (
                pace.finish(metrics.step, metrics.total_steps) if job.status == "running" else None
            )
            method = self.claim.method["type"]
            job_records.add_event(
                session, job, step_message(metrics, method), data=metrics_data(metrics, method)
            )
        fault_point("after_step")

    def record_signal(self, signal: Signal) -> None:
        """A warning, once a job: a run resumed from before it finds the same signal again."""
        with queue.held(self.db, self.claim, *TRAINING) as (session, job):
            if job_records.has_event_starting(session, job.id, signal.opening):
                return
            message = signal.message
            best = _best_checkpoint(job_records.job_checkpoints(session, job.id))
            if signal.kind == "overfitting" and best is not None:
                message += (
                    f" The checkpoint with the lowest validation loss is {best.name} "
                    f"(full validation loss {best.metrics['full_valid_loss']:.2f})."
                )
            job_records.add_event(session, job, message, level="warn")
        fault_point("after_signal")

    def record_warning(self, opening: str, message: str) -> None:
        """A warn event about the job's surroundings (an integration that failed), once a job:
        a resumed run that meets the same trouble does not repeat it."""
        with queue.held(self.db, self.claim, *TRAINING) as (session, job):
            if not job_records.has_event_starting(session, job.id, opening):
                job_records.add_event(session, job, message, level="warn")

    def record_checkpoint(self, metrics: StepMetrics) -> list[int]:
        """An epoch's checkpoint row (once) and its event; returns the steps pruned."""
        claim = self.claim
        name = new_fine_tuned_model_name(
            claim.model, claim.project_slug, claim.suffix, checkpoint_step=metrics.step
        )
        with queue.held(self.db, claim, *TRAINING) as (session, job):
            kept, pruned = self._add_checkpoint(session, job, metrics, name)
            if kept.name == name:  # new, not found from before a resume
                job_records.add_event(
                    session,
                    job,
                    f"Checkpoint created at step {metrics.step} with Snapshot ID: {name}",
                )
        return pruned

    def succeed(
        self,
        result: TrainingResult,
        results: ResultFile,
        training_s: float,
        profile: PromptProfile | None,
        forgetting: ForgettingCheck | None,
    ) -> tuple[str, list[int]]:
        """One transaction makes the job succeed; returns its model's name and the checkpoint
        steps pruned."""
        claim = self.claim
        name = new_fine_tuned_model_name(claim.model, claim.project_slug, claim.suffix)
        now = int(time.time())
        last = result.steps[-1]
        with queue.held(self.db, claim, "running") as (session, job):
            session.add(self._results_row(results, now))
            _mark_succeeded(job, name, result, results, profile, now)
            # As OpenAI does, the final checkpoint carries the fine-tuned model's own name.
            _, pruned = self._add_checkpoint(session, job, last, name)
            add_usage(
                session,
                project_id=claim.project_id,
                model=name,
                base_model=claim.model,
                trained_tokens=result.trained_tokens,
                training_seconds=training_s,
            )
            if forgetting is not None:  # with the success: a resumed job says it once
                job.openft = {"forgetting": forgetting.as_dict()}
                for level, message in forgetting.events():
                    job_records.add_event(session, job, message, level=level)
            job_records.add_event(session, job, f"New fine-tuned model created: {name}")
            job_records.add_event(session, job, "The job has successfully completed")
        return name, pruned

    def fail(self, code: str, message: str, param: str | None) -> None:
        queue.fail(self.db, self.claim, code, message, param)

    def release(self, message: str) -> None:
        """Hand the job back to the queue, to resume from its newest snapshot."""
        queue.release(self.db, self.claim, message)

    def let_go(self) -> None:
        """Stop holding the job, leaving its status as it is (paused, cancelled, re-claimed)."""
        queue.let_go(self.db, self.claim)

    def _add_checkpoint(
        self, session: Session, job: FineTuningJob, metrics: StepMetrics, name: str
    ) -> tuple[FineTuningJobCheckpoint, list[int]]:
        """Record a checkpoint (flagged once the job warned of overfitting), then prune all but
        the newest ``checkpoints_kept`` and the best by validation loss; returns it and the
        pruned steps."""
        flagged = job_records.has_event_starting(session, job.id, OVERFITTING_OPENING)
        found = checkpoint_metrics(metrics, self.claim.method["type"], overfitting=flagged)
        kept = job_records.add_checkpoint(session, job, metrics.step, name, found)
        checkpoints = job_records.job_checkpoints(session, job.id)
        keep = self.settings.checkpoints_kept
        if self.claim.method["type"] == "reinforcement":
            # As OpenAI does: the best by validation reward, and the newest (the final model).
            pruned = job_records.prune_checkpoints(
                session, job.id, 1, [c.step for c in _best_rewarded(checkpoints, keep)]
            )
            return kept, pruned
        best = _best_checkpoint(checkpoints)
        pruned = job_records.prune_checkpoints(session, job.id, keep, best.step if best else None)
        return kept, pruned

    def _results_row(self, results: ResultFile, now: int) -> File:
        return File(
            id=results.id,
            project_id=self.claim.project_id,
            purpose="fine-tune-results",
            filename="step_metrics.csv",
            bytes=len(results.content),
            created_at=now,
            expires_at=None,
            status="processed",
        )


def _mark_succeeded(
    job: FineTuningJob,
    name: str,
    result: TrainingResult,
    results: ResultFile,
    profile: PromptProfile | None,
    now: int,
) -> None:
    queue.transition(job, "succeeded")
    job.fine_tuned_model = name
    job.result_files = [results.id]
    job.trained_tokens = result.trained_tokens
    job.prompt_profile = profile.as_dict() if profile is not None else None
    job.finished_at = now
    job.estimated_finish = None
    job.lease_owner = None


def _best_checkpoint(
    checkpoints: list[FineTuningJobCheckpoint],
) -> FineTuningJobCheckpoint | None:
    """The published checkpoint with the lowest full validation loss (the earliest of equals)."""
    measured = [c for c in checkpoints if c.metrics.get("full_valid_loss") is not None]
    return min(measured, key=lambda c: (c.metrics["full_valid_loss"], c.step), default=None)


def _best_rewarded(
    checkpoints: list[FineTuningJobCheckpoint], count: int
) -> list[FineTuningJobCheckpoint]:
    """The ``count`` checkpoints with the highest validation reward (the later of equals)."""
    measured = [c for c in checkpoints if c.metrics.get("valid_reward_mean") is not None]
    ranked = sorted(measured, key=lambda c: (c.metrics["valid_reward_mean"], c.step), reverse=True)
    return ranked[:count]
