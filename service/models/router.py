"""HTTP routes of the Models API."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import CurrentPrincipal, Models
from service.models.schemas import Model, ModelList

router = APIRouter(tags=["Models"])


@router.get("/models", response_model=ModelList)
def list_models(principal: CurrentPrincipal, models: Models) -> ModelList:
    return models.available(principal)


@router.get("/models/{model}", response_model=Model)
def retrieve_model(model: str, principal: CurrentPrincipal, models: Models) -> Model:
    return models.retrieve(principal, model)
