"""The worker process: claim a job, run it, and map how it ended to the queue.

Run as ``python -m trainer.worker`` (``openft serve`` supervises one). It talks to the rest of
OpenFT only through the database and the blob store, so any number of workers on any number of
machines share one queue. A job survives its worker: resume snapshots go to the blob store, and a
job whose worker died is queued again by the next worker's reaper and resumed from the newest one.
What a job writes is in ``trainer.ledger`` (rows) and ``trainer.artifacts`` (blobs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import torch

from graders.config import parse_grader, walk
from graders.python_sandbox import SandboxLimits
from service import queue
from service.blobstore import BlobStore, open_blob_store
from service.blobstore.keys import checkpoint_variant
from service.db.database import Database
from service.drift import PromptProfile, build_profile
from service.errors import ServiceUnavailableError
from service.logs import configure_logging, log_context
from service.queue import Claim, LeaseLostError
from service.settings import BaseModelConfig, Settings
from trainer.artifacts import JobArtifacts, forget_snapshots_if_finished, sweep_snapshots
from trainer.dataset import DatasetError, prompt_lengths
from trainer.faults import fault_point
from trainer.followers import data_parallel
from trainer.forgetting import ForgettingCheck, forgetting_check
from trainer.heartbeat import Heartbeat
from trainer.hyperparameters import AUTO_DPO_BETA, Hyperparameters, resolve
from trainer.integrations import JobTrackers
from trainer.job_files import JobFiles, prepare_job_files
from trainer.judge import HttpJudge
from trainer.ledger import JobLedger, Pace
from trainer.loop import (
    StepMetrics,
    TrainingHooks,
    TrainingResult,
    TrainingStopped,
    train_lora,
)
from trainer.objectives import TrainingFailed
from trainer.reinforcement import ReinforcementSetup
from trainer.results import ResultFile
from trainer.run import ReinforcementRun, TrainingRun

log = logging.getLogger("openft.worker")
LOST_STORE = "lost the database or the blob store"
POLL_WHEN_DOWN_S = 1.0


@dataclass(frozen=True)
class _Job:
    """A claimed job as the worker holds it: its rows, its blobs and its lease."""

    claim: Claim
    ledger: JobLedger
    artifacts: JobArtifacts
    beat: Heartbeat


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
        sweep_snapshots(self.blobs, self.db)
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
                forget_snapshots_if_finished(self.blobs, self.db, job_id)
        return queue.claim(self.db, self.owner, self.settings.lease_seconds)

    def process(self, claim: Claim) -> None:
        log.info("claimed %s (attempt %d)", claim.job_id, claim.attempt)
        job = _Job(
            claim,
            JobLedger(self.db, claim, self.settings),
            JobArtifacts(self.blobs, claim),
            Heartbeat(self.db, claim, self.settings.lease_seconds),
        )
        job.beat.start()
        try:
            with log_context(job_id=claim.job_id, project_id=claim.project_id):
                self._run_job(job)
        except TrainingStopped as stopped:
            self._stopped(job, stopped)
        except LeaseLostError:
            log.info("%s is no longer ours (cancelled, paused or re-claimed)", claim.job_id)
            job.ledger.let_go()
        except DatasetError as exc:
            self._fail(job, exc.code, exc.message, exc.param)
        except TrainingFailed as exc:
            self._fail(job, exc.code, exc.message, None)
        except ServiceUnavailableError as exc:
            # Not the job's fault: hand it back (or, while the database is still away, let the
            # lease expire); it resumes from its newest snapshot.
            log.warning(
                "%s during %s; it resumes from its snapshot: %s", LOST_STORE, claim.job_id, exc
            )
            with contextlib.suppress(ServiceUnavailableError):
                job.ledger.release("The job is queued to resume after a storage outage")
        except (torch.OutOfMemoryError, MemoryError):
            log.exception("job %s ran out of memory", claim.job_id)
            message = (
                "Training ran out of memory. Try a smaller batch_size, or a base model with a "
                "lower max_seq_length."
            )
            self._fail(job, "out_of_memory", message, None)
        except Exception as exc:
            log.exception("job %s failed", claim.job_id)
            message = f"Training failed: {type(exc).__name__}: {exc}"
            self._fail(job, "training_failed", message, None)
        finally:
            job.beat.stop()

    def _stopped(self, job: _Job, stopped: TrainingStopped) -> None:
        log.info("%s stopped at step %d (%s)", job.claim.job_id, stopped.step, stopped.reason)
        if stopped.reason == "shutdown":
            job.ledger.release(
                f"The worker is shutting down; the job will resume from step {stopped.step}"
            )
        elif stopped.reason == "pause":
            job.ledger.let_go()
        else:
            forget_snapshots_if_finished(self.blobs, self.db, job.claim.job_id)

    def _fail(self, job: _Job, code: str, message: str, param: str | None) -> None:
        job.ledger.fail(code, message, param)
        job.artifacts.drop_snapshots()

    def _run_job(self, job: _Job) -> None:
        """One job from its files to its fine-tuned model."""
        base = self._base_model(job.claim)
        files = prepare_job_files(job.claim, base, job.artifacts)
        kind = job.claim.method["type"]
        hp = resolve(
            job.claim.method[kind]["hyperparameters"],
            len(files.training.examples),
            auto_learning_rate_multiplier=base.auto_learning_rate_multiplier,
        )
        job.ledger.validated(files.training.report, hp, base)
        with tempfile.TemporaryDirectory(prefix=f"openft-{job.claim.job_id}-") as scratch:
            workdir = Path(scratch)
            run, pace = self._start(job, base, files, hp, workdir)
            trackers = JobTrackers(
                job.claim, hp.as_dict(), self.settings, job.ledger.record_warning
            )
            name = None
            try:
                result = self._train(job, run, pace, workdir, trackers)
                profile = build_profile(prompt_lengths(run.examples), files.training.prompt_tokens)
                training_s = time.monotonic() - pace.started  # the check below is not billed
                forgetting = forgetting_check(
                    base, result.model, self.settings.train_tokens_per_forward
                )
                name = self._publish(
                    job, workdir / "final", result, training_s, profile, forgetting
                )
            finally:
                trackers.finish(name)

    def _base_model(self, claim: Claim) -> BaseModelConfig:
        base = self.models.get(claim.model)
        if base is None:
            raise DatasetError(
                "model_not_available", f"Model {claim.model} is not configured", None
            )
        return base

    def _start(
        self, job: _Job, base: BaseModelConfig, files: JobFiles, hp: Hyperparameters, workdir: Path
    ) -> tuple[TrainingRun, Pace]:
        """Fetch what the run starts from (a snapshot, a parent adapter) and mark it running."""
        claim = job.claim
        snapshot = job.artifacts.newest_snapshot(workdir)
        parent = job.artifacts.parent_adapter(workdir) if claim.parent_job_id else None
        job.ledger.started(hp, snapshot.step if snapshot else None)
        run = TrainingRun(
            base,
            files.training.examples,
            hp,
            seed=claim.seed,
            tokens_per_forward=self.settings.train_tokens_per_forward,
            validation=files.validation.examples if files.validation is not None else None,
            resume_from=snapshot.path if snapshot else None,
            start_from=parent,
            dpo_beta=(hp.beta or AUTO_DPO_BETA) if claim.method["type"] == "dpo" else None,
            reinforcement=self._reinforcement(claim, hp),
        )
        return run, Pace(snapshot.step if snapshot else 0)

    def _reinforcement(self, claim: Claim, hp: Hyperparameters) -> ReinforcementRun | None:
        """An RFT job's grading: its grader, the sandbox's limits, and the judges its model
        graders reach (base models served at ``OPENFT_VLLM_URLS``)."""
        if claim.method["type"] != "reinforcement" or hp.reinforcement is None:
            return None
        given = claim.method["reinforcement"]
        settings = self.settings
        setup = ReinforcementSetup(
            grader=given["grader"],
            samples_per_prompt=hp.reinforcement.samples_per_prompt,
            eval_samples=hp.reinforcement.eval_samples,
            max_completion_tokens=settings.rft_max_completion_tokens,
            response_format=given.get("response_format"),
        )
        judges = {}
        for _, sub in walk(parse_grader(given["grader"])):
            local = settings.grader_models.get(getattr(sub, "model", ""), getattr(sub, "model", ""))
            if replicas := settings.vllm_replicas(local):
                judges[sub.model] = (f"{replicas[0].rstrip('/')}/v1", local)
        embeddings = None
        if settings.grader_embeddings_url and settings.grader_embedding_model:
            embeddings = (
                settings.grader_embeddings_url.rstrip("/"),
                settings.grader_embedding_model,
            )
        return ReinforcementRun(
            setup,
            HttpJudge(judges, embeddings, settings.vllm_api_key),
            SandboxLimits(
                timeout_s=settings.grader_python_timeout_seconds,
                memory_bytes=settings.grader_python_memory_mib * 1024 * 1024,
            ),
        )

    def _train(
        self, job: _Job, run: TrainingRun, pace: Pace, workdir: Path, trackers: JobTrackers
    ) -> TrainingResult:
        """Train the run (with followers, data-parallel), its hooks writing the job's ledger
        (and its integrations' runs)."""

        def on_step(metrics: StepMetrics) -> None:
            job.ledger.record_step(metrics, pace)
            trackers.log(metrics)

        hooks = TrainingHooks(
            on_step=on_step,
            on_signal=job.ledger.record_signal,
            stop_reason=lambda: self._stop_reason(job),
            on_snapshot=job.artifacts.store_snapshot,
            on_epoch_end=lambda m, folder: self._publish_checkpoint(job, m, folder),
            snapshot_every=self.settings.snapshot_every_steps,
        )
        size, rendezvous = self.settings.train_processes_per_job, workdir / "rendezvous"
        with data_parallel(run, size=size, rendezvous=rendezvous) as group:
            return train_lora(run, output_dir=workdir, hooks=hooks, group=group)

    def _stop_reason(self, job: _Job) -> str | None:
        if job.beat.lost.is_set():
            return "lost"
        reason = job.ledger.stop_reason()
        if reason is None and self.stopping.is_set():
            return "shutdown"
        return reason

    def _publish_checkpoint(self, job: _Job, metrics: StepMetrics, folder: Path) -> None:
        """An epoch's adapter: blobs under its step, then its row (once), then pruning."""
        job.artifacts.put_adapter(folder, checkpoint_variant(metrics.step))
        pruned = job.ledger.record_checkpoint(metrics)
        job.artifacts.drop_checkpoints(pruned)
        fault_point("after_checkpoint_publish")

    def _publish(
        self,
        job: _Job,
        adapter_dir: Path,
        result: TrainingResult,
        training_s: float,
        profile: PromptProfile | None,
        forgetting: ForgettingCheck | None,
    ) -> str:
        """Blobs first (adapter, result file), then one transaction makes the job succeed;
        returns the fine-tuned model's name."""
        job.artifacts.put_adapter(adapter_dir)
        results = ResultFile.of(result, job.claim.method["type"])
        job.artifacts.put_result_file(results)
        fault_point("before_success")
        name, pruned = job.ledger.succeed(result, results, training_s, profile, forgetting)
        job.artifacts.drop_checkpoints(pruned)
        job.artifacts.drop_snapshots()
        log.info("%s succeeded: %s", job.claim.job_id, name)
        return name


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
