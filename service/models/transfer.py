"""Fine-tuned models out of OpenFT and outside adapters into it (``openft models export|import``).

The ML work (checking an adapter against its base model, merging weights) runs in
``python -m trainer.adapter_transfer``: the service never imports the ML stack.

An imported adapter becomes a fine-tuning job that is already ``succeeded``: that is what makes a
model an ``ft:`` model of a project everywhere (``/v1/models``, the gateway, deleting, training on
from it). The job says plainly that nothing was trained: no training file (``""``), no trained
tokens, no result file, no checkpoints, ``metadata.imported_from`` naming the folder, and an event
"Imported LoRA adapter ...". Its adapter lives at ``adapters/{job_id}/final/`` like a trained one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service import job_records
from service.auth import repository as auth_repository
from service.blobstore import BlobStore, download_folder, write_blob
from service.blobstore.keys import adapter_key, adapter_prefix
from service.db.database import Database
from service.db.models import FineTuningJob
from service.errors import InvalidRequestError, NotFoundError, OpenFTError
from service.ids import new_fine_tuned_model_name, new_job_id, parse_fine_tuned_model_name
from service.jobs import repository as jobs_repository
from service.jobs.service import SUFFIX
from service.settings import BaseModelConfig, Settings
from service.supervisor import python_module_command

TRAINER_MODULE = "trainer.adapter_transfer"
REJECTED_EXIT = 3  # trainer.adapter_transfer's "the adapter cannot be served"
READ_CHUNK = 1024 * 1024
IMPORTED_METHOD = {"type": "supervised", "supervised": {"hyperparameters": {}}}


@dataclass(frozen=True)
class ImportedModel:
    name: str
    job_id: str


class ModelTransfer:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs

    def export(self, model: str, target: Path, *, merged: bool) -> None:
        """Write ``model`` (an ``ft:`` model or checkpoint) into the new folder ``target``: its
        PEFT adapter, or with ``merged`` the base model's weights with the adapter folded in."""
        adapter = self._locate(model)
        base = self._base(adapter.base_model) if merged else None
        prefix = adapter_prefix(adapter.job_id, adapter.variant)
        with _new_folder(target) as staging:
            if base is None:
                download_folder(self.blobs, prefix, staging)
                return
            with tempfile.TemporaryDirectory() as downloaded:
                download_folder(self.blobs, prefix, Path(downloaded))
                _run_trainer(
                    "merge", "--adapter", downloaded, "--base-path", base.path,
                    "--output", str(staging),
                )  # fmt: skip

    def import_adapter(
        self, folder: Path, *, project_slug: str, base: str | None, suffix: str | None
    ) -> ImportedModel:
        """Check the PEFT adapter in ``folder``, store it, and make it a model of the project."""
        if suffix is not None and not SUFFIX.fullmatch(suffix):
            raise InvalidRequestError(f"suffix {suffix!r} must match {SUFFIX.pattern}")
        with self.db.read() as session:
            project = auth_repository.project_by_slug(session, project_slug)
        if project is None:
            raise NotFoundError(
                f"There is no project '{project_slug}'; create it with "
                f"`openft keys create --project {project_slug}`."
            )
        model = self._base(base or self._stated_base(folder))
        job_id = new_job_id()
        with tempfile.TemporaryDirectory() as checked:
            _run_trainer(
                "check", "--adapter", str(folder), "--base-path", model.path,
                "--max-rank", str(self.settings.vllm_max_lora_rank), "--output", checked,
            )  # fmt: skip
            try:
                self._store(job_id, Path(checked))
                name = new_fine_tuned_model_name(model.name, project.slug, suffix)
                self._record(job_id, project.id, model.name, name, suffix, folder)
            except BaseException:
                for key in list(self.blobs.keys(adapter_prefix(job_id))):
                    self.blobs.delete(key)
                raise
        return ImportedModel(name, job_id)

    def _locate(self, model: str) -> jobs_repository.OwnedAdapter:
        parsed = parse_fine_tuned_model_name(model)
        slug = parsed.project_slug if parsed else None
        with self.db.read() as session:
            project = auth_repository.project_by_slug(session, slug) if slug else None
            found = jobs_repository.adapter_of(session, project.id, model) if project else None
        if found is None:
            raise NotFoundError(
                f"The model '{model}' does not exist: give a fine-tuned model or checkpoint "
                "name (ft:...) as /v1/models lists it.",
                code="model_not_found",
            )
        return found

    def _base(self, name: str) -> BaseModelConfig:
        model = self.settings.base_model(name)
        if model is None:
            known = ", ".join(self.settings.base_models_by_name)
            raise InvalidRequestError(
                f"'{name}' is not a configured base model (OPENFT_BASE_MODELS has: {known})."
            )
        return model

    def _stated_base(self, folder: Path) -> str:
        """The registered base model the adapter's config names, by name or path."""
        try:
            stated = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            stated = str(stated.get("base_model_name_or_path") or "")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise InvalidRequestError(
                f"Could not read {folder / 'adapter_config.json'} ({exc}): is it a PEFT adapter "
                "folder?"
            ) from exc
        for model in self.settings.fine_tunable_models:
            if stated and stated.rstrip("/") in (model.name, model.path.rstrip("/")):
                return model.name
        raise InvalidRequestError(
            f"The adapter was trained on '{stated or 'an unnamed model'}', which is not a "
            "configured base model; give --base to say which base model it belongs to."
        )

    def _store(self, job_id: str, folder: Path) -> None:
        for path in sorted(folder.iterdir()):
            with path.open("rb") as handle:
                write_blob(self.blobs, adapter_key(job_id, path.name), _chunks(handle))

    def _record(
        self, job_id: str, project_id: str, base: str, name: str, suffix: str | None, folder: Path
    ) -> None:
        now = int(time.time())
        with self.db.write() as session:
            job = FineTuningJob(
                id=job_id, project_id=project_id, model=base, training_file="",
                validation_file=None, suffix=suffix, seed=0, method=IMPORTED_METHOD,
                job_metadata={"imported_from": folder.resolve().name[:512]}, integrations=[],
                status="succeeded", error=None, fine_tuned_model=name, result_files=[],
                trained_tokens=None, created_at=now, finished_at=now, attempt=0,
                cancel_requested=False,
            )  # fmt: skip
            session.add(job)
            session.flush()
            job_records.add_event(
                session, job, f"Imported LoRA adapter '{folder.resolve().name}' (no training ran)"
            )
            job_records.add_event(session, job, f"New fine-tuned model created: {name}")
            job_records.add_event(session, job, "The job has successfully completed")


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(READ_CHUNK):
        yield chunk


@contextmanager
def _new_folder(target: Path) -> Iterator[Path]:
    """A staging folder beside ``target``, renamed onto it when the block succeeds."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidRequestError(f"{target} exists and is not an empty folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_trainer(*args: str) -> None:
    """Run ``python -m trainer.adapter_transfer``; its refusals become a client error."""
    command = python_module_command(TRAINER_MODULE, *args)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return
    problems = [line.removeprefix("error: ") for line in done.stderr.splitlines()]
    if done.returncode == REJECTED_EXIT and problems:
        raise InvalidRequestError("The adapter cannot be served:\n- " + "\n- ".join(problems))
    tail = "\n".join(done.stderr.strip().splitlines()[-10:])
    raise OpenFTError(f"{TRAINER_MODULE} failed (exit {done.returncode}):\n{tail}")
