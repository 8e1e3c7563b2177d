"""HTTP routes of checkpoint permissions (admin keys only); rules live in
``CheckpointPermissionsService``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.checkpoint_permissions.service import (
    CheckpointPermissionsService,
    CreatePermissionsRequest,
)
from service.deps import CurrentAdmin, provided
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

Permissions = Annotated[CheckpointPermissionsService, provided(CheckpointPermissionsService)]

router = api_router(
    prefix="/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions",
    tags=["Fine-tuning"],
    responses=ERROR_RESPONSES,
)


@router.post("")
async def create_checkpoint_permissions(
    fine_tuned_model_checkpoint: str,
    body: CreatePermissionsRequest,
    admin: CurrentAdmin,
    permissions: Permissions,
) -> JSONResponse:
    """Share a fine-tuned model or checkpoint with other projects (an admin key): they may call
    it and start jobs from it, and see nothing else of its owner's."""
    return JSONResponse(
        await run_in_threadpool(permissions.create, admin, fine_tuned_model_checkpoint, body)
    )


@router.get("")
async def list_checkpoint_permissions(
    fine_tuned_model_checkpoint: str,
    admin: CurrentAdmin,
    permissions: Permissions,
    project_id: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    order: Literal["ascending", "descending"] = "descending",
) -> JSONResponse:
    page = await run_in_threadpool(
        permissions.list, admin, fine_tuned_model_checkpoint, project_id=project_id,
        after=after, limit=limit, order=order,
    )  # fmt: skip
    return JSONResponse(page)


@router.delete("/{permission_id}")
async def delete_checkpoint_permission(
    fine_tuned_model_checkpoint: str,
    permission_id: str,
    admin: CurrentAdmin,
    permissions: Permissions,
) -> JSONResponse:
    """Revoke a grant; the project's next request for the model, on any API process, is a 404."""
    return JSONResponse(
        await run_in_threadpool(
            permissions.delete, admin, fine_tuned_model_checkpoint, permission_id
        )
    )
