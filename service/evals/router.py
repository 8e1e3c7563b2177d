"""HTTP route of OpenFT's before/after evaluation (``/v1/openft/evals``)."""

from __future__ import annotations

from typing import Annotated

from service.deps import CurrentPrincipal, provided
from service.evals.runner import EvalRunner
from service.evals.schemas import CreateEvalRequest, EvalReport
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

Evals = Annotated[EvalRunner, provided(EvalRunner)]

router = api_router(tags=["OpenFT extensions"], responses=ERROR_RESPONSES)


@router.post("/openft/evals", response_model=EvalReport)
async def create_eval(
    body: CreateEvalRequest, principal: CurrentPrincipal, runner: Evals
) -> EvalReport:
    """Before/after report: the file's examples answered by the fine-tuned model and by its
    base, scored against the reference answers (exact match, token F1, ROUGE-L). Synchronous;
    `limit` bounds the examples."""
    return await runner.run(principal, body)
