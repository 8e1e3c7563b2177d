"""HTTP routes of the Files API; rules live in ``FilesService``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, provided
from service.files.schemas import UPLOAD_PURPOSES, FileDeleted, FileList, FileObject
from service.files.service import FilesService
from service.files.upload import receive_upload
from service.http.download import attachment
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.idempotency import IdempotencyHeader, checked_key

Files = Annotated[FilesService, provided(FilesService)]

router = api_router(tags=["Files"], responses=ERROR_RESPONSES)

CREATE_FILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "additionalProperties": False,
                    # OpenAI's expires_after needs both fields, or neither.
                    "dependentRequired": {
                        "expires_after[anchor]": ["expires_after[seconds]"],
                        "expires_after[seconds]": ["expires_after[anchor]"],
                    },
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": 3600,
                            "maximum": 2592000,
                        },
                    },
                }
            }
        },
    }
}


@router.post("/files", response_model=FileObject, openapi_extra=CREATE_FILE_BODY)
async def create_file(
    request: Request,
    principal: CurrentPrincipal,
    files: Files,
    idempotency_key: IdempotencyHeader = None,
) -> FileObject:
    """Upload a file (streamed; at most ``OPENFT_MAX_FILE_BYTES``)."""
    key = checked_key(idempotency_key)
    upload = await receive_upload(
        request.headers, request.stream(), files.blobs, files.limits, hash_content=key is not None
    )
    try:
        return await run_in_threadpool(files.create, principal, upload, key)
    finally:
        upload.discard()  # a no-op once the blob is committed


@router.get("/files", response_model=FileList)
async def list_files(
    principal: CurrentPrincipal,
    files: Files,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> FileList:
    return await run_in_threadpool(
        files.list, principal, purpose=purpose, limit=limit, order=order, after=after
    )


@router.get("/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, principal: CurrentPrincipal, files: Files) -> FileObject:
    return await run_in_threadpool(files.retrieve, principal, file_id)


@router.delete("/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, principal: CurrentPrincipal, files: Files) -> FileDeleted:
    return await run_in_threadpool(files.delete, principal, file_id)


@router.get(
    "/files/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_file(file_id: str, principal: CurrentPrincipal, files: Files) -> StreamingResponse:
    content = files.content(principal, file_id)
    return StreamingResponse(
        content.chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(content.size),
            "content-disposition": attachment(content.filename),
        },
    )
