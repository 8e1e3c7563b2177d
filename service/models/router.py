"""HTTP routes of the Models API."""

from __future__ import annotations

from typing import Annotated

from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, Gateway, provided
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.models.schemas import Model, ModelDeleted, ModelList
from service.models.service import ModelsService

Models = Annotated[ModelsService, provided(ModelsService)]

router = api_router(tags=["Models"], responses=ERROR_RESPONSES)


@router.get("/models", response_model=ModelList)
async def list_models(principal: CurrentPrincipal, models: Models) -> ModelList:
    return await run_in_threadpool(models.available, principal)


@router.get("/models/{model}", response_model=Model)
async def retrieve_model(model: str, principal: CurrentPrincipal, models: Models) -> Model:
    return await run_in_threadpool(models.retrieve, principal, model)


@router.delete("/models/{model}", response_model=ModelDeleted)
async def delete_model(
    model: str, principal: CurrentPrincipal, models: Models, gateway: Gateway
) -> ModelDeleted:
    """Delete a fine-tuned model: it stops being served and listed, and its adapter is removed."""
    deleted = await run_in_threadpool(models.delete, principal, model)
    await gateway.unload(deleted)
    return models.deleted_response(deleted)
