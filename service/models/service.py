"""``/v1/models``: the base models anyone may fine-tune plus the caller's fine-tuned models."""

from __future__ import annotations

from sqlalchemy import select

from service.auth.service import Principal
from service.db.database import Database
from service.db.models import FineTuningJob
from service.errors import NotFoundError
from service.models.registry import ModelRegistry
from service.models.schemas import Model, ModelList

BASE_OWNER = "system"


class ModelsService:
    def __init__(self, db: Database, registry: ModelRegistry) -> None:
        self.db = db
        self.registry = registry

    def available(self, principal: Principal) -> ModelList:
        base = [
            Model(id=m.name, created=self.registry.created_at(m), owned_by=BASE_OWNER)
            for m in self.registry.all()
        ]
        return ModelList(data=base + self._fine_tuned(principal))

    def retrieve(self, principal: Principal, model_id: str) -> Model:
        for model in self.available(principal).data:
            if model.id == model_id:
                return model
        raise NotFoundError(
            f"The model '{model_id}' does not exist", param="model", code="model_not_found"
        )

    def _fine_tuned(self, principal: Principal) -> list[Model]:
        query = (
            select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at)
            .where(
                FineTuningJob.project_id == principal.project_id,
                FineTuningJob.status == "succeeded",
                FineTuningJob.fine_tuned_model.is_not(None),
            )
            .order_by(FineTuningJob.seq)
        )
        with self.db.read() as session:
            rows = session.execute(query).all()
        return [
            Model(id=name, created=finished or 0, owned_by=principal.project_slug)
            for name, finished in rows
        ]
