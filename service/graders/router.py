"""HTTP routes of OpenAI's graders (``/v1/fine_tuning/alpha/graders``) over ``GradersService``."""

from __future__ import annotations

from typing import Annotated

from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, provided
from service.graders.schemas import (
    RunGraderRequest,
    RunGraderResponse,
    ValidateGraderRequest,
    ValidateGraderResponse,
)
from service.graders.service import GradersService
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

Graders = Annotated[GradersService, provided(GradersService)]

router = api_router(tags=["Graders"], responses=ERROR_RESPONSES)


@router.post("/fine_tuning/alpha/graders/validate", response_model=ValidateGraderResponse)
async def validate_grader(
    body: ValidateGraderRequest, _principal: CurrentPrincipal, graders: Graders
) -> ValidateGraderResponse:
    """Check a grader as a reinforcement fine-tuning job would (400 naming the bad field)."""
    return await run_in_threadpool(graders.validate, body)


@router.post("/fine_tuning/alpha/graders/run", response_model=RunGraderResponse)
async def run_grader(
    body: RunGraderRequest, principal: CurrentPrincipal, graders: Graders
) -> RunGraderResponse:
    """Grade `model_sample` against `item` with the grader: its reward and metadata."""
    return await graders.run(principal, body)
