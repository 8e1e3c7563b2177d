"""HTTP routes of the Batch API (``/v1/batches``); rules live in ``BatchesService``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.batches.schemas import CreateBatchRequest
from service.batches.service import BatchesService
from service.deps import CurrentPrincipal, provided
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

Batches = Annotated[BatchesService, provided(BatchesService)]

router = api_router(prefix="/batches", tags=["Batch"], responses=ERROR_RESPONSES)


@router.post("")
async def create_batch(
    body: CreateBatchRequest, principal: CurrentPrincipal, batches: Batches
) -> JSONResponse:
    """A batch over a `batch` file, run in the background through the same gateway as
    interactive requests, at a lower priority; it starts `validating`."""
    return JSONResponse(await run_in_threadpool(batches.create, principal, body))


@router.get("")
async def list_batches(
    principal: CurrentPrincipal,
    batches: Batches,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    """The project's batches, newest first."""
    page = await run_in_threadpool(batches.list, principal, after=after, limit=limit)
    return JSONResponse(page)


@router.get("/{batch_id}")
async def retrieve_batch(
    batch_id: str, principal: CurrentPrincipal, batches: Batches
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(batches.retrieve, principal, batch_id))


@router.post("/{batch_id}/cancel")
async def cancel_batch(
    batch_id: str, principal: CurrentPrincipal, batches: Batches
) -> JSONResponse:
    """`cancelling` at once, `cancelled` once the lines in flight have finished: the output file
    keeps what completed, the error file lists the lines never sent (`batch_cancelled`)."""
    return JSONResponse(await run_in_threadpool(batches.cancel, principal, batch_id))
