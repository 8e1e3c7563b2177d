"""HTTP routes of the Fine-tuning jobs API; rules live in ``JobsService``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, provided
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.idempotency import IdempotencyHeader
from service.jobs.schemas import (
    CreateJobRequest,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobEventList,
    FineTuningJobList,
)
from service.jobs.service import JobsService

Jobs = Annotated[JobsService, provided(JobsService)]

router = api_router(prefix="/fine_tuning/jobs", tags=["Fine-tuning"], responses=ERROR_RESPONSES)
METADATA_KEY = re.compile(r"metadata\[(.+)\]")


@router.post("", response_model=FineTuningJob)
async def create_job(
    body: CreateJobRequest,
    principal: CurrentPrincipal,
    jobs: Jobs,
    idempotency_key: IdempotencyHeader = None,
) -> FineTuningJob:
    return await run_in_threadpool(jobs.create, principal, body, idempotency_key)


@router.get("", response_model=FineTuningJobList)
async def list_jobs(
    request: Request,
    principal: CurrentPrincipal,
    jobs: Jobs,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobList:
    """``metadata[key]=value`` query parameters filter on metadata (all must match)."""
    metadata = {
        found.group(1): value
        for name, value in request.query_params.multi_items()
        if (found := METADATA_KEY.fullmatch(name))
    }
    return await run_in_threadpool(
        jobs.list, principal, after=after, limit=limit, metadata=metadata
    )


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob)
async def retrieve_job(
    fine_tuning_job_id: str, principal: CurrentPrincipal, jobs: Jobs
) -> FineTuningJob:
    return await run_in_threadpool(jobs.retrieve, principal, fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
async def cancel_job(
    fine_tuning_job_id: str, principal: CurrentPrincipal, jobs: Jobs
) -> FineTuningJob:
    return await run_in_threadpool(jobs.cancel, principal, fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/pause", response_model=FineTuningJob)
async def pause_job(
    fine_tuning_job_id: str, principal: CurrentPrincipal, jobs: Jobs
) -> FineTuningJob:
    return await run_in_threadpool(jobs.pause, principal, fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/resume", response_model=FineTuningJob)
async def resume_job(
    fine_tuning_job_id: str, principal: CurrentPrincipal, jobs: Jobs
) -> FineTuningJob:
    return await run_in_threadpool(jobs.resume, principal, fine_tuning_job_id)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=FineTuningJobCheckpointList)
async def list_checkpoints(
    fine_tuning_job_id: str,
    principal: CurrentPrincipal,
    jobs: Jobs,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> FineTuningJobCheckpointList:
    return await run_in_threadpool(
        jobs.checkpoints, principal, fine_tuning_job_id, after=after, limit=limit
    )


@router.get("/{fine_tuning_job_id}/events", response_model=FineTuningJobEventList)
async def list_events(
    fine_tuning_job_id: str,
    principal: CurrentPrincipal,
    jobs: Jobs,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobEventList:
    return await run_in_threadpool(
        jobs.events, principal, fine_tuning_job_id, after=after, limit=limit
    )
