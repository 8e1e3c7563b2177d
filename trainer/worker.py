"""The worker process: claim a job, validate its files, train, publish the adapter and results.

Run as ``python -m trainer.worker`` (``openft serve`` supervises one). It talks to the rest of
OpenFT only through the database and the blob store.
"""

from __future__ import annotations

import argparse
import base64
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

from transformers import AutoTokenizer

from service.blobstore import BlobStore, LocalBlobStore
from service.blobstore.keys import adapter_key, file_key
from service.db.database import Database
from service.db.models import File
from service.ids import new_file_id, new_model_tag
from service.jobs import queue, repository
from service.jobs.queue import Claim, LeaseLostError
from service.settings import BaseModelConfig, Settings
from trainer.dataset import (
    DatasetError,
    PreparedFile,
    check_validation_file,
    prepare_training_file,
    summary_events,
)
from trainer.hyperparameters import Hyperparameters, resolve
from trainer.sft import StepMetrics, TrainingResult, TrainingStopped, train_lora

log = logging.getLogger("openft.worker")
RESULT_COLUMNS = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.blobs: BlobStore = LocalBlobStore(settings.blob_root)
        self.models = {m.name: m for m in settings.fine_tunable_models}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()

    def run(self, *, once: bool = False) -> None:
        """Process jobs until stopped (or, with ``once``, until the queue is empty)."""
        while not self.stopping.is_set():
            claim = queue.claim(self.db, self.owner, self.settings.lease_seconds)
            if claim is None:
                if once:
                    return
                self.stopping.wait(self.settings.worker_poll_seconds)
                continue
            self.process(claim)

    def process(self, claim: Claim) -> None:
        log.info("claimed %s (attempt %d)", claim.job_id, claim.attempt)
        beat = _Heartbeat(self.db, claim, self.settings.lease_seconds)
        beat.start()
        try:
            self._run_job(claim, beat)
        except DatasetError as exc:
            queue.fail(self.db, claim, exc.code, exc.message, exc.param)
        except TrainingStopped:
            if self.stopping.is_set():
                queue.release(self.db, claim)
            log.info("stopped %s", claim.job_id)
        except LeaseLostError:
            log.info("%s is no longer ours (cancelled or re-claimed)", claim.job_id)
        except Exception as exc:
            log.exception("job %s failed", claim.job_id)
            message = f"Training failed: {type(exc).__name__}: {exc}"
            queue.fail(self.db, claim, "training_failed", message, None)
        finally:
            beat.stop()

    def _run_job(self, claim: Claim, beat: _Heartbeat) -> None:
        base = self.models.get(claim.model)
        if base is None:
            raise DatasetError(
                "model_not_available", f"Model {claim.model} is not configured", None
            )
        examples = self._validate(claim, base)
        requested = claim.method["supervised"]["hyperparameters"]
        hp = resolve(requested, len(examples.examples))
        if claim.status == "validating_files":
            summary = summary_events(
                examples.report, hp.n_epochs, base.training_price_per_1m_tokens
            )
            with queue.held(self.db, claim, "validating_files") as (session, job):
                for message in summary:
                    repository.add_event(session, job, message)
                queue.transition(job, "queued")
                repository.add_event(session, job, "Files validated, moving job to queued state")
        self._start(claim, hp)
        with tempfile.TemporaryDirectory(prefix=f"openft-{claim.job_id}-") as scratch:
            result = train_lora(
                base,
                examples.examples,
                hp,
                seed=claim.seed,
                output_dir=Path(scratch),
                on_step=lambda m: self._record_step(claim, m),
                should_stop=lambda: (
                    self.stopping.is_set()
                    or beat.lost.is_set()
                    or not queue.still_ours(self.db, claim)
                ),
            )
            self._publish(claim, Path(scratch), result)

    def _validate(self, claim: Claim, base: BaseModelConfig) -> PreparedFile:
        """Check the job's files in one streaming pass each; tokenize the training examples."""
        method = claim.method["type"]
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        prepared = prepare_training_file(
            self._file_chunks(claim.training_file, "training"),
            tokenizer,
            file_id=claim.training_file,
            method=method,
            max_length=base.max_seq_length,
        )
        if claim.validation_file is not None:
            check_validation_file(
                self._file_chunks(claim.validation_file, "validation"),
                file_id=claim.validation_file,
                method=method,
            )
        return prepared

    def _file_chunks(self, file_id: str, kind: str) -> Iterator[bytes]:
        try:
            yield from self.blobs.read(file_key(file_id))
        except FileNotFoundError:
            raise DatasetError(
                f"deleted_{kind}_file",
                f"The job failed because the {kind} file was deleted",
                f"{kind}_file",
            ) from None

    def _start(self, claim: Claim, hp: Hyperparameters) -> None:
        """queued -> running, with the resolved hyperparameters written back to the job."""
        with queue.held(self.db, claim, "queued") as (session, job):
            queue.transition(job, "running")
            job.method = {"type": "supervised", "supervised": {"hyperparameters": hp.as_dict()}}
            repository.add_event(session, job, "Fine-tuning job started")

    def _record_step(self, claim: Claim, metrics: StepMetrics) -> None:
        with queue.held(self.db, claim, "running") as (session, job):
            repository.add_event(
                session,
                job,
                f"Step {metrics.step}/{metrics.total_steps}: "
                f"training loss={metrics.train_loss:.2f}",
                data={
                    "step": metrics.step,
                    "train_loss": metrics.train_loss,
                    "total_steps": metrics.total_steps,
                    "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
                },
            )

    def _publish(self, claim: Claim, adapter_dir: Path, result: TrainingResult) -> None:
        """Blobs first (adapter, result file), then one transaction makes the job succeed."""
        for path in sorted(adapter_dir.iterdir()):
            if path.is_file():
                self._put(adapter_key(claim.job_id, path.name), path.read_bytes())
        result_id = new_file_id()
        result_csv = _result_csv(result)
        self._put(file_key(result_id), base64.b64encode(result_csv))
        name = f"ft:{claim.model}:{claim.project_slug}:{claim.suffix or ''}:{new_model_tag()}"
        now = int(time.time())
        with queue.held(self.db, claim, "running") as (session, job):
            session.add(
                File(
                    id=result_id,
                    project_id=claim.project_id,
                    purpose="fine-tune-results",
                    filename="step_metrics.csv",
                    bytes=len(base64.b64encode(result_csv)),
                    created_at=now,
                    expires_at=None,
                    status="processed",
                )
            )
            queue.transition(job, "succeeded")
            job.fine_tuned_model = name
            job.result_files = [result_id]
            job.trained_tokens = result.trained_tokens
            job.finished_at = now
            job.lease_owner = None
            repository.add_event(session, job, f"New fine-tuned model created: {name}")
            repository.add_event(session, job, "The job has successfully completed")
        log.info("%s succeeded: %s", claim.job_id, name)

    def _put(self, key: str, data: bytes) -> None:
        writer = self.blobs.stage()
        try:
            writer.write(data)
            writer.commit(key)
        except BaseException:
            writer.abort()
            raise


class _Heartbeat(threading.Thread):
    """Renews the lease every third of its length; sets ``lost`` when the job is gone."""

    def __init__(self, db: Database, claim: Claim, lease_s: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claim.job_id}")
        self.db, self.claim, self.lease_s = db, claim, lease_s
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            if not queue.renew(self.db, self.claim, self.lease_s):
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()


def _result_csv(result: TrainingResult) -> bytes:
    rows = [RESULT_COLUMNS] + [
        f"{m.step},{m.train_loss:.5f},{m.train_mean_token_accuracy:.5f},," for m in result.steps
    ]
    return ("\n".join(rows) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenFT training worker")
    parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    worker = Worker(Settings())

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run(once=args.once)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
