"""The worker process: claim a job, validate its files, train, publish the adapter and results.

Run as ``python -m trainer.worker`` (``openft serve`` supervises one). It talks to the rest of
OpenFT only through the database and the blob store, so any number of workers on any number of
machines share one queue. A job survives its worker: resume snapshots go to the blob store, and a
job whose worker died is queued again by the next worker's reaper and resumed from the newest one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Literal

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from transformers import AutoTokenizer

from service import job_records, queue
from service.blobstore import BlobStore, download_folder, open_blob_store, write_blob
from service.blobstore.keys import (
    adapter_key,
    adapter_prefix,
    checkpoint_variant,
    file_key,
    snapshot_key,
    snapshot_prefix,
)
from service.db.database import Database
from service.db.models import File, FineTuningJob, FineTuningJobCheckpoint
from service.drift import PromptProfile, build_profile
from service.errors import ServiceUnavailableError
from service.ids import new_file_id, new_fine_tuned_model_name
from service.logs import configure_logging, log_context
from service.queue import Claim, LeaseLostError
from service.settings import BaseModelConfig, Settings
from service.usage import add_usage
from trainer.data_parallel import FollowerJob, data_parallel
from trainer.dataset import (
    DatasetError,
    PreparedFile,
    TrainingExample,
    prepare_file,
    prompt_lengths,
    summary_events,
)
from trainer.faults import fault_point
from trainer.forgetting import ForgettingCheck, forgetting_check
from trainer.hyperparameters import AUTO_DPO_BETA, Hyperparameters, resolve
from trainer.objectives import PreferenceObjective
from trainer.sft import (
    StepMetrics,
    TrainingFailed,
    TrainingHooks,
    TrainingResult,
    TrainingStopped,
    train_lora,
)
from trainer.signals import OVERFITTING_OPENING, Signal

log = logging.getLogger("openft.worker")
RESULT_COLUMNS = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
FILES_VALIDATED = "Files validated, moving job to queued state"
LOST_STORE = "lost the database or the blob store"
POLL_WHEN_DOWN_S = 1.0


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.blobs: BlobStore = open_blob_store(settings)
        self.models = {m.name: m for m in settings.fine_tunable_models}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        processes, gpus = settings.train_processes_per_job, torch.cuda.device_count()
        if processes > 1 and torch.cuda.is_available() and processes > gpus:
            raise SystemExit(
                f"OPENFT_TRAIN_PROCESSES_PER_JOB is {processes} but this worker sees {gpus} GPUs: "
                "one training process per GPU"
            )

    def run(self, *, once: bool = False) -> None:
        """Process jobs until stopped (or, with ``once``, until the queue is empty)."""
        self.blobs.prepare()
        self.sweep_snapshots()
        while not self.stopping.is_set():
            try:
                claim = self._next_claim()
                if claim is not None:
                    self.process(claim)
                    continue
            except ServiceUnavailableError as exc:  # a database restart is no reason to exit
                log.warning("%s; retrying in %ss: %s", LOST_STORE, POLL_WHEN_DOWN_S, exc)
                self.stopping.wait(POLL_WHEN_DOWN_S)
                continue
            if once:
                return
            self.stopping.wait(self.settings.worker_poll_seconds)

    def _next_claim(self) -> Claim | None:
        reaped = queue.reap_expired_leases(self.db, self.settings.max_lost_leases)
        if reaped:
            log.warning("freed jobs whose worker stopped responding: %s", reaped)
            for job_id in reaped:
                self._forget_snapshots_if_finished(job_id)
        return queue.claim(self.db, self.owner, self.settings.lease_seconds)

    def process(self, claim: Claim) -> None:
        log.info("claimed %s (attempt %d)", claim.job_id, claim.attempt)
        beat = _Heartbeat(self.db, claim, self.settings.lease_seconds)
        beat.start()
        try:
            with log_context(job_id=claim.job_id, project_id=claim.project_id):
                self._run_job(claim, beat)
        except TrainingStopped as stopped:
            self._stopped(claim, stopped)
        except LeaseLostError:
            log.info("%s is no longer ours (cancelled, paused or re-claimed)", claim.job_id)
            queue.let_go(self.db, claim)
        except DatasetError as exc:
            self._fail(claim, exc.code, exc.message, exc.param)
        except TrainingFailed as exc:
            self._fail(claim, exc.code, exc.message, None)
        except ServiceUnavailableError as exc:
            # Not the job's fault: hand it back (or, while the database is still away, let the
            # lease expire); it resumes from its newest snapshot.
            log.warning(
                "%s during %s; it resumes from its snapshot: %s", LOST_STORE, claim.job_id, exc
            )
            with contextlib.suppress(ServiceUnavailableError):
                queue.release(self.db, claim, "The job is queued to resume after a storage outage")
        except (torch.OutOfMemoryError, MemoryError):
            log.exception("job %s ran out of memory", claim.job_id)
            message = (
                "Training ran out of memory. Try a smaller batch_size, or a base model with a "
                "lower max_seq_length."
            )
            self._fail(claim, "out_of_memory", message, None)
        except Exception as exc:
            log.exception("job %s failed", claim.job_id)
            message = f"Training failed: {type(exc).__name__}: {exc}"
            self._fail(claim, "training_failed", message, None)
        finally:
            beat.stop()

    def _stopped(self, claim: Claim, stopped: TrainingStopped) -> None:
        log.info("%s stopped at step %d (%s)", claim.job_id, stopped.step, stopped.reason)
        if stopped.reason == "shutdown":
            queue.release(
                self.db,
                claim,
                f"The worker is shutting down; the job will resume from step {stopped.step}",
            )
        elif stopped.reason == "pause":
            queue.let_go(self.db, claim)
        else:
            self._forget_snapshots_if_finished(claim.job_id)

    def _fail(self, claim: Claim, code: str, message: str, param: str | None) -> None:
        queue.fail(self.db, claim, code, message, param)
        self._delete(snapshot_prefix(claim.job_id))

    def _run_job(self, claim: Claim, beat: _Heartbeat) -> None:
        base = self.models.get(claim.model)
        if base is None:
            raise DatasetError(
                "model_not_available", f"Model {claim.model} is not configured", None
            )
        examples, validation = self._validate(claim, base)
        kind = claim.method["type"]
        requested = claim.method[kind]["hyperparameters"]
        hp = resolve(requested, len(examples.examples))
        self._finish_validation(claim, examples, hp, base)
        with tempfile.TemporaryDirectory(prefix=f"openft-{claim.job_id}-") as scratch:
            workdir = Path(scratch)
            snapshot = self._download_newest_snapshot(claim, workdir)
            parent = self._download_parent(claim, workdir) if claim.parent_job_id else None
            self._start(claim, hp, snapshot)
            beta = (hp.beta or AUTO_DPO_BETA) if kind == "dpo" else None
            followers = self._followers(
                base, examples.examples, hp, claim.seed, workdir, snapshot, parent, beta
            )
            pace = _Pace(snapshot[0] if snapshot else 0)
            hooks = TrainingHooks(
                on_step=lambda m: self._record_step(claim, m, pace),
                on_signal=lambda found: self._record_signal(claim, found),
                stop_reason=lambda: self._stop_reason(claim, beat),
                on_snapshot=lambda step, path: self._store_snapshot(claim, step, path),
                on_epoch_end=lambda m, folder: self._publish_checkpoint(claim, m, folder),
                snapshot_every=self.settings.snapshot_every_steps,
            )
            with data_parallel(followers) as group:
                result = train_lora(
                    base,
                    examples.examples,
                    hp,
                    seed=claim.seed,
                    output_dir=workdir,
                    hooks=hooks,
                    resume_from=snapshot[1] if snapshot else None,
                    tokens_per_forward=self.settings.train_tokens_per_forward,
                    validation=validation.examples if validation is not None else None,
                    start_from=parent,
                    objective=PreferenceObjective(beta) if beta is not None else None,
                    group=group,
                )
            profile = build_profile(prompt_lengths(examples.examples), examples.prompt_tokens)
            training_s = time.monotonic() - pace.started  # the check below is not billed
            forgetting = forgetting_check(
                base, result.model, self.settings.train_tokens_per_forward
            )
            self._publish(claim, workdir / "final", result, training_s, profile, forgetting)

    def _followers(
        self,
        base: BaseModelConfig,
        examples: list[TrainingExample],
        hp: Hyperparameters,
        seed: int,
        workdir: Path,
        snapshot: tuple[int, Path] | None,
        parent: Path | None,
        dpo_beta: float | None,
    ) -> FollowerJob | None:
        """What the job's other training processes need, when it trains data-parallel."""
        size = self.settings.train_processes_per_job
        if size == 1:
            return None
        return FollowerJob(
            base=base,
            examples=examples,
            hp=hp,
            seed=seed,
            tokens_per_forward=self.settings.train_tokens_per_forward,
            resume_from=snapshot[1] if snapshot else None,
            start_from=parent,
            dpo_beta=dpo_beta,
            rendezvous=workdir / "rendezvous",
            size=size,
        )

    def _finish_validation(
        self, claim: Claim, examples: PreparedFile, hp: Hyperparameters, base: BaseModelConfig
    ) -> None:
        """Say what the files hold, once per job, and move it from validating_files to queued."""
        with queue.held(self.db, claim, "validating_files", "queued") as (session, job):
            if job_records.has_event(session, job.id, FILES_VALIDATED):
                return
            for message in summary_events(examples.report, hp.n_epochs, base):
                job_records.add_event(session, job, message)
            if job.status == "validating_files":
                queue.transition(job, "queued")
            job_records.add_event(session, job, FILES_VALIDATED)
        fault_point("after_validation")

    def _validate(
        self, claim: Claim, base: BaseModelConfig
    ) -> tuple[PreparedFile, PreparedFile | None]:
        """Check the job's files in one streaming pass each and tokenize their examples."""
        method = claim.method["type"]
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        prepared = prepare_file(
            self._file_chunks(claim.training_file, "training"),
            tokenizer,
            file_id=claim.training_file,
            method=method,
            max_length=base.max_seq_length,
        )
        validation = None
        if claim.validation_file is not None:
            validation = prepare_file(
                self._file_chunks(claim.validation_file, "validation"),
                tokenizer,
                file_id=claim.validation_file,
                method=method,
                max_length=base.max_seq_length,
                param="validation_file",
            )
        return prepared, validation

    def _file_chunks(
        self, file_id: str, kind: Literal["training", "validation"]
    ) -> Iterator[bytes]:
        try:
            yield from self.blobs.read(file_key(file_id))
        except FileNotFoundError:
            error = queue.deleted_file_error(kind)
            raise DatasetError(error.code, error.message, error.param) from None

    def _start(self, claim: Claim, hp: Hyperparameters, snapshot: tuple[int, Path] | None) -> None:
        """queued -> running, with the resolved hyperparameters written back to the job."""
        with queue.held(self.db, claim, "queued") as (session, job):
            queue.transition(job, "running")
            kind = claim.method["type"]
            job.method = {"type": kind, kind: {"hyperparameters": hp.as_dict()}}
            if snapshot is not None:
                message = f"Fine-tuning job resumed from step {snapshot[0]}"
            elif job_records.has_event(session, job.id, "Fine-tuning job started"):
                message = "Fine-tuning job restarted from the beginning"
            else:
                message = "Fine-tuning job started"
            job_records.add_event(session, job, message)

    def _stop_reason(self, claim: Claim, beat: _Heartbeat) -> str | None:
        if beat.lost.is_set():
            return "lost"
        reason = queue.stop_reason(self.db, claim)
        if reason is None and self.stopping.is_set():
            return "shutdown"
        return reason

    def _record_step(self, claim: Claim, metrics: StepMetrics, pace: _Pace) -> None:
        # Also when paused (or paused and resumed) meanwhile: the step just taken is kept.
        with queue.held(self.db, claim, "running", "paused", "queued") as (session, job):
            job.estimated_finish = (
                pace.finish(metrics.step, metrics.total_steps) if job.status == "running" else None
            )
            job_records.add_event(session, job, _step_message(metrics), data=_metrics_data(metrics))
        fault_point("after_step")

    def _record_signal(self, claim: Claim, signal: Signal) -> None:
        """A warning, once a job: a run resumed from before it finds the same signal again."""
        with queue.held(self.db, claim, "running", "paused", "queued") as (session, job):
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

    def _store_snapshot(self, claim: Claim, step: int, path: Path) -> None:
        """Upload the snapshot, then drop the older ones: one complete snapshot always exists."""
        key = snapshot_key(claim.job_id, step)
        with path.open("rb") as handle:
            self._put_stream(key, handle)
        for older in list(self.blobs.keys(snapshot_prefix(claim.job_id))):
            if older < key:
                self.blobs.delete(older)
        fault_point("after_snapshot_upload")

    def _download_newest_snapshot(self, claim: Claim, workdir: Path) -> tuple[int, Path] | None:
        keys = sorted(self.blobs.keys(snapshot_prefix(claim.job_id)))
        if not keys:
            return None
        newest = keys[-1]
        path = workdir / "resume.pt"
        with path.open("wb") as handle:
            for chunk in self.blobs.read(newest):
                handle.write(chunk)
        step = int(newest.rsplit("step-", 1)[1].removesuffix(".pt"))
        log.info("%s resumes from the snapshot at step %d", claim.job_id, step)
        return step, path

    def _download_parent(self, claim: Claim, workdir: Path) -> Path:
        """The adapter a continued job starts from (its model may have been deleted since)."""
        assert claim.parent_job_id is not None and claim.parent_variant is not None
        folder = workdir / "parent"
        folder.mkdir()
        download_folder(
            self.blobs, adapter_prefix(claim.parent_job_id, claim.parent_variant), folder
        )
        if not (folder / "adapter_config.json").is_file():
            raise DatasetError(
                "model_not_available",
                "The fine-tuned model this job continues from was deleted, so training cannot "
                "start from it.",
                "model",
            )
        return folder

    def _publish_checkpoint(self, claim: Claim, metrics: StepMetrics, folder: Path) -> None:
        """An epoch's adapter: blobs under its step, then its row (once), then pruning."""
        variant = checkpoint_variant(metrics.step)
        self._put_folder(claim.job_id, folder, variant)
        name = new_fine_tuned_model_name(
            claim.model, claim.project_slug, claim.suffix, checkpoint_step=metrics.step
        )
        with queue.held(self.db, claim, "running", "paused", "queued") as (session, job):
            kept, pruned = self._add_checkpoint(session, job, claim, metrics, name)
            if kept.name == name:  # new, not found from before a resume
                job_records.add_event(
                    session,
                    job,
                    f"Checkpoint created at step {metrics.step} with Snapshot ID: {name}",
                )
        self._delete_checkpoints(claim.job_id, pruned)
        fault_point("after_checkpoint_publish")

    def _add_checkpoint(
        self, session: Session, job: FineTuningJob, claim: Claim, metrics: StepMetrics, name: str
    ) -> tuple[FineTuningJobCheckpoint, list[int]]:
        """Record a checkpoint (flagged once the job warned of overfitting), then prune all but
        the newest ``checkpoints_kept`` and the best by validation loss; returns it and the
        pruned steps."""
        flagged = job_records.has_event_starting(session, job.id, OVERFITTING_OPENING)
        found = _checkpoint_metrics(metrics, claim.method["type"], overfitting=flagged)
        kept = job_records.add_checkpoint(session, job, metrics.step, name, found)
        best = _best_checkpoint(job_records.job_checkpoints(session, job.id))
        pruned = job_records.prune_checkpoints(
            session, job.id, self.settings.checkpoints_kept, best.step if best else None
        )
        return kept, pruned

    def _publish(
        self,
        claim: Claim,
        adapter_dir: Path,
        result: TrainingResult,
        training_s: float,
        profile: PromptProfile | None,
        forgetting: ForgettingCheck | None = None,
    ) -> None:
        """Blobs first (adapter, result file), then one transaction makes the job succeed."""
        self._put_folder(claim.job_id, adapter_dir)
        result_id = new_file_id()
        result_csv = base64.b64encode(_result_csv(result))
        self._put(file_key(result_id), result_csv)
        fault_point("before_success")
        name = new_fine_tuned_model_name(claim.model, claim.project_slug, claim.suffix)
        now = int(time.time())
        last = result.steps[-1]
        with queue.held(self.db, claim, "running") as (session, job):
            session.add(
                File(
                    id=result_id,
                    project_id=claim.project_id,
                    purpose="fine-tune-results",
                    filename="step_metrics.csv",
                    bytes=len(result_csv),
                    created_at=now,
                    expires_at=None,
                    status="processed",
                )
            )
            queue.transition(job, "succeeded")
            job.fine_tuned_model = name
            job.result_files = [result_id]
            job.trained_tokens = result.trained_tokens
            job.prompt_profile = profile.as_dict() if profile is not None else None
            job.finished_at = now
            job.estimated_finish = None
            job.lease_owner = None
            # As OpenAI does, the final checkpoint carries the fine-tuned model's own name.
            _, pruned = self._add_checkpoint(session, job, claim, last, name)
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
        self._delete_checkpoints(claim.job_id, pruned)
        self._delete(snapshot_prefix(claim.job_id))
        log.info("%s succeeded: %s", claim.job_id, name)

    def sweep_snapshots(self) -> None:
        """Delete the snapshots of jobs that ended while no worker held them (e.g. cancelled)."""
        job_ids = {key.split("/")[1] for key in self.blobs.keys("snapshots")}
        for job_id in sorted(job_ids):
            self._forget_snapshots_if_finished(job_id)

    def _forget_snapshots_if_finished(self, job_id: str) -> None:
        with self.db.read() as session:
            status = session.scalar(select(FineTuningJob.status).where(FineTuningJob.id == job_id))
        if status in (None, "succeeded", "failed", "cancelled"):
            self._delete(snapshot_prefix(job_id))

    def _delete_checkpoints(self, job_id: str, steps: list[int]) -> None:
        for step in steps:
            self._delete(adapter_prefix(job_id, checkpoint_variant(step)))

    def _delete(self, prefix: str) -> None:
        for key in list(self.blobs.keys(prefix)):
            self.blobs.delete(key)

    def _put_folder(self, job_id: str, folder: Path, variant: str = "final") -> None:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                with path.open("rb") as handle:
                    self._put_stream(adapter_key(job_id, path.name, variant), handle)

    def _put(self, key: str, data: bytes) -> None:
        self._put_stream(key, io.BytesIO(data))

    def _put_stream(self, key: str, handle: BinaryIO) -> None:
        write_blob(self.blobs, key, iter(lambda: handle.read(1 << 20), b""))


class _Pace:
    """When the job will finish, from the pace of the steps this worker has taken so far."""

    def __init__(self, first_step: int) -> None:
        self.first_step = first_step
        self.started = time.monotonic()

    def finish(self, step: int, total: int) -> int:
        per_step = (time.monotonic() - self.started) / max(1, step - self.first_step)
        return int(time.time() + per_step * (total - step))


class _Heartbeat(threading.Thread):
    """Renews the lease every third of its length; sets ``lost`` when the job is gone."""

    def __init__(self, db: Database, claim: Claim, lease_s: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claim.job_id}")
        self.db, self.claim, self.lease_s = db, claim, lease_s
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                renewed = queue.renew(self.db, self.claim, self.lease_s)
            except ServiceUnavailableError:
                continue  # the database is away: try again at the next beat
            if not renewed:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()


def _validation_figures(metrics: StepMetrics) -> dict[str, float]:
    """The validation figures a step has (none without a validation file)."""
    figures = {
        "valid_loss": metrics.valid_loss,
        "valid_mean_token_accuracy": metrics.valid_mean_token_accuracy,
        "full_valid_loss": metrics.full_valid_loss,
        "full_valid_mean_token_accuracy": metrics.full_valid_mean_token_accuracy,
    }
    return {name: value for name, value in figures.items() if value is not None}


def _step_message(metrics: StepMetrics) -> str:
    """OpenAI's text: ``Step 3/30: training loss=0.52, validation loss=0.61, full validation
    loss=0.64`` (the validation parts only on steps that measured them)."""
    parts = [f"training loss={metrics.train_loss:.2f}"]
    if metrics.valid_loss is not None:
        parts.append(f"validation loss={metrics.valid_loss:.2f}")
    if metrics.full_valid_loss is not None:
        parts.append(f"full validation loss={metrics.full_valid_loss:.2f}")
    return f"Step {metrics.step}/{metrics.total_steps}: " + ", ".join(parts)


def _metrics_data(metrics: StepMetrics) -> dict[str, float | int]:
    return {
        "step": metrics.step,
        "train_loss": metrics.train_loss,
        "total_steps": metrics.total_steps,
        "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
        **_validation_figures(metrics),
    }


def _checkpoint_metrics(
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


def _best_checkpoint(
    checkpoints: list[FineTuningJobCheckpoint],
) -> FineTuningJobCheckpoint | None:
    """The published checkpoint with the lowest full validation loss (the earliest of equals)."""
    measured = [c for c in checkpoints if c.metrics.get("full_valid_loss") is not None]
    return min(measured, key=lambda c: (c.metrics["full_valid_loss"], c.step), default=None)


def _result_csv(result: TrainingResult) -> bytes:
    """OpenAI's columns; the validation ones are empty on steps without a validation batch."""

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.5f}"

    rows = [RESULT_COLUMNS] + [
        f"{m.step},{m.train_loss:.5f},{m.train_mean_token_accuracy:.5f},"
        f"{cell(m.valid_loss)},{cell(m.valid_mean_token_accuracy)}"
        for m in result.steps
    ]
    return ("\n".join(rows) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenFT training worker")
    parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging("info", settings.log_format)
    torch.set_num_threads(settings.train_threads or os.cpu_count() or 1)
    worker = Worker(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run(once=args.once)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
