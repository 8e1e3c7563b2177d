"""A job's blobs: its input files, resume snapshots, adapters (its own and a parent's), results."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from service import queue
from service.blobstore import BlobStore, download_folder, write_blob
from service.blobstore.keys import (
    adapter_key,
    adapter_prefix,
    checkpoint_variant,
    file_key,
    snapshot_key,
    snapshot_prefix,
)
from service.db.database import Database
from service.queue import Claim
from trainer.dataset import DatasetError
from trainer.faults import fault_point
from trainer.ledger import job_finished
from trainer.results import ResultFile

log = logging.getLogger("openft.worker")


@dataclass(frozen=True)
class Snapshot:
    """A job's newest resume snapshot, downloaded."""

    step: int
    path: Path


class JobArtifacts:
    """The claimed job's blobs."""

    def __init__(self, blobs: BlobStore, claim: Claim) -> None:
        self.blobs, self.claim = blobs, claim

    def input_file(self, file_id: str, kind: Literal["training", "validation"]) -> Iterator[bytes]:
        """The chunks of the job's training or validation file (deleted: the job fails)."""
        try:
            yield from self.blobs.read(file_key(file_id))
        except FileNotFoundError:
            error = queue.deleted_file_error(kind)
            raise DatasetError(error.code, error.message, error.param) from None

    def store_snapshot(self, step: int, path: Path) -> None:
        """Upload the snapshot, then drop the older ones: one complete snapshot always exists."""
        key = snapshot_key(self.claim.job_id, step)
        with path.open("rb") as handle:
            _put_stream(self.blobs, key, handle)
        for older in list(self.blobs.keys(snapshot_prefix(self.claim.job_id))):
            if older < key:
                self.blobs.delete(older)
        fault_point("after_snapshot_upload")

    def newest_snapshot(self, workdir: Path) -> Snapshot | None:
        """The snapshot to resume from, downloaded into ``workdir``; None: start afresh."""
        keys = sorted(self.blobs.keys(snapshot_prefix(self.claim.job_id)))
        if not keys:
            return None
        newest = keys[-1]
        path = workdir / "resume.pt"
        with path.open("wb") as handle:
            for chunk in self.blobs.read(newest):
                handle.write(chunk)
        step = int(newest.rsplit("step-", 1)[1].removesuffix(".pt"))
        log.info("%s resumes from the snapshot at step %d", self.claim.job_id, step)
        return Snapshot(step, path)

    def drop_snapshots(self) -> None:
        _delete(self.blobs, snapshot_prefix(self.claim.job_id))

    def parent_adapter(self, workdir: Path) -> Path:
        """The adapter a continued job starts from (its model may have been deleted since)."""
        claim = self.claim
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

    def put_adapter(self, folder: Path, variant: str = "final") -> None:
        """Upload an adapter folder: the final one, or an epoch's checkpoint variant."""
        for path in sorted(folder.iterdir()):
            if path.is_file():
                with path.open("rb") as handle:
                    key = adapter_key(self.claim.job_id, path.name, variant)
                    _put_stream(self.blobs, key, handle)

    def drop_checkpoints(self, steps: list[int]) -> None:
        for step in steps:
            _delete(self.blobs, adapter_prefix(self.claim.job_id, checkpoint_variant(step)))

    def put_result_file(self, results: ResultFile) -> None:
        _put_stream(self.blobs, file_key(results.id), io.BytesIO(results.content))


def sweep_snapshots(blobs: BlobStore, db: Database) -> None:
    """Delete the snapshots of jobs that ended while no worker held them (e.g. cancelled)."""
    job_ids = {key.split("/")[1] for key in blobs.keys("snapshots")}
    for job_id in sorted(job_ids):
        forget_snapshots_if_finished(blobs, db, job_id)


def forget_snapshots_if_finished(blobs: BlobStore, db: Database, job_id: str) -> None:
    if job_finished(db, job_id):
        _delete(blobs, snapshot_prefix(job_id))


def _delete(blobs: BlobStore, prefix: str) -> None:
    for key in list(blobs.keys(prefix)):
        blobs.delete(key)


def _put_stream(blobs: BlobStore, key: str, handle: BinaryIO) -> None:
    write_blob(blobs, key, iter(lambda: handle.read(1 << 20), b""))
