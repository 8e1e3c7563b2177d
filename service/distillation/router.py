"""HTTP route of distillation (``/v1/openft/distillations``); the rules live in ``Distiller``."""

from __future__ import annotations

from typing import Annotated

from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, provided
from service.distillation.service import Distillation, DistillationRequest, Distiller
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

DistillerDep = Annotated[Distiller, provided(Distiller)]

router = api_router(tags=["OpenFT extensions"], responses=ERROR_RESPONSES)


@router.post("/openft/distillations", response_model=Distillation)
async def create_distillation(
    body: DistillationRequest, principal: CurrentPrincipal, distiller: DistillerDep
) -> Distillation:
    """A chat training file (purpose `fine-tune`) from the project's stored chat completions and
    responses that match the filters, newest first: OpenAI's "Distill" workflow as an API. Pass
    its `file.id` to `fine_tuning.jobs.create`."""
    return await run_in_threadpool(distiller.distill, principal, body)
