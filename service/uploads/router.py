"""HTTP routes of the Uploads API; rules live in ``UploadsService``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, provided
from service.files.upload import receive_upload
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.uploads.schemas import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from service.uploads.service import UploadsService

Uploads = Annotated[UploadsService, provided(UploadsService)]

router = api_router(prefix="/uploads", tags=["Uploads"], responses=ERROR_RESPONSES)

ADD_PART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "additionalProperties": False,
                    "properties": {"data": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}

# ``file`` is left out until the upload is completed, as api.openai.com does.
_UPLOAD = {"response_model": Upload, "response_model_exclude_none": True}


@router.post("", **_UPLOAD)  # type: ignore[arg-type]
async def create_upload(
    body: CreateUploadRequest, principal: CurrentPrincipal, uploads: Uploads
) -> Upload:
    return await run_in_threadpool(uploads.create, principal, body)


@router.post("/{upload_id}/parts", response_model=UploadPart, openapi_extra=ADD_PART_BODY)
async def add_upload_part(
    upload_id: str, request: Request, principal: CurrentPrincipal, uploads: Uploads
) -> UploadPart:
    """One part (at most 64 MB), streamed to the blob store."""
    part = await receive_upload(
        request.headers, request.stream(), uploads.blobs, uploads.part_limits
    )
    try:
        return await run_in_threadpool(uploads.add_part, principal, upload_id, part)
    finally:
        part.discard()


@router.post("/{upload_id}/complete", **_UPLOAD)  # type: ignore[arg-type]
async def complete_upload(
    upload_id: str, body: CompleteUploadRequest, principal: CurrentPrincipal, uploads: Uploads
) -> Upload:
    return await run_in_threadpool(uploads.complete, principal, upload_id, body)


@router.post("/{upload_id}/cancel", **_UPLOAD)  # type: ignore[arg-type]
async def cancel_upload(upload_id: str, principal: CurrentPrincipal, uploads: Uploads) -> Upload:
    return await run_in_threadpool(uploads.cancel, principal, upload_id)
