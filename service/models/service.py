"""``/v1/models``: the base models anyone may fine-tune plus the caller's fine-tuned models."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete, select

from service.auth.principal import Principal
from service.blobstore import BlobStore
from service.db.database import Database
from service.db.models import CheckpointPermission, FineTuningJob, FineTuningJobCheckpoint
from service.errors import NotFoundError, PermissionDeniedError
from service.gateway import DeletedModel
from service.jobs import repository as jobs_repository
from service.models.schemas import Model, ModelDeleted, ModelList
from service.settings import BaseModelConfig, Settings

BASE_OWNER = "system"


class ModelsService:
    def __init__(self, db: Database, settings: Settings, blobs: BlobStore) -> None:
        self.db = db
        self.settings = settings
        self.blobs = blobs

    def available(self, principal: Principal) -> ModelList:
        base = [
            Model(id=m.name, created=_appeared_at(m), owned_by=BASE_OWNER)
            for m in self.settings.fine_tunable_models
        ]
        return ModelList(data=base + self._fine_tuned(principal))

    def retrieve(self, principal: Principal, model_id: str) -> Model:
        for model in self.available(principal).data:
            if model.id == model_id:
                return model
        raise NotFoundError(
            f"The model '{model_id}' does not exist", param="model", code="model_not_found"
        )

    def delete(self, principal: Principal, model_id: str) -> DeletedModel:
        """Hide a fine-tuned model for good and remove its adapter blobs (base models stay)."""
        if self.settings.base_model(model_id) is not None:
            raise PermissionDeniedError(
                f"The base model '{model_id}' cannot be deleted; only fine-tuned models can.",
                param="model",
            )
        with self.db.write() as session:
            job = jobs_repository.succeeded_with_model(session, principal.project_id, model_id)
            if job is None:
                raise NotFoundError(
                    f"The model '{model_id}' does not exist", param="model", code="model_not_found"
                )
            job.model_deleted_at = int(time.time())
            checkpoints = session.scalars(
                select(FineTuningJobCheckpoint.name).where(FineTuningJobCheckpoint.job_id == job.id)
            ).all()
            deleted = DeletedModel(model_id, job.id, job.model, tuple(checkpoints))
            session.execute(  # its grants to other projects end with it
                delete(CheckpointPermission).where(
                    CheckpointPermission.owner_project_id == principal.project_id,
                    CheckpointPermission.checkpoint.in_([model_id, *checkpoints]),
                )
            )
        for key in list(self.blobs.keys(f"adapters/{deleted.job_id}")):
            self.blobs.delete(key)
        return deleted

    @staticmethod
    def deleted_response(model: DeletedModel) -> ModelDeleted:
        return ModelDeleted(id=model.name, deleted=True)

    def _fine_tuned(self, principal: Principal) -> list[Model]:
        query = (
            select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at)
            .where(
                FineTuningJob.project_id == principal.project_id,
                FineTuningJob.status == "succeeded",
                FineTuningJob.fine_tuned_model.is_not(None),
                FineTuningJob.model_deleted_at.is_(None),
            )
            .order_by(FineTuningJob.seq)
        )
        with self.db.read() as session:
            rows = session.execute(query).all()
            checkpoints = jobs_repository.project_checkpoints(session, principal.project_id)
        models = [
            Model(id=name, created=finished or 0, owned_by=principal.project_slug)
            for name, finished in rows
        ]
        return models + [
            Model(id=c.name, created=c.created_at, owned_by=principal.project_slug)
            for c in checkpoints
        ]


def _appeared_at(model: BaseModelConfig) -> int:
    """When a local base model appeared on disk; 0 for hub ids we have not resolved."""
    path = Path(model.path)
    return int(path.stat().st_mtime) if path.exists() else 0
