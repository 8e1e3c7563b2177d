"""HTTP routes of the inference gateway: OpenAI's Chat Completions and legacy Completions, and
OpenFT's before/after evaluation (``/v1/openft/evals``), which runs through the same gateway."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from inference.evals import EvalRunner
from inference.gateway import Gateway
from service.auth.principal import Principal
from service.deps import CurrentPrincipal
from service.evals.schemas import CreateEvalRequest, EvalReport
from service.http.error_responses import ERROR_RESPONSES

router = APIRouter(tags=["Inference"], responses=ERROR_RESPONSES)


def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def eval_runner(request: Request) -> EvalRunner:
    found: EvalRunner = request.app.state.evals
    return found


EvalRunnerDep = Annotated[EvalRunner, Depends(eval_runner)]
# ``stream: true`` answers with server-sent events, passed through from vLLM.
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


def _request_body(*required: str) -> Any:
    """OpenAI's request body, forwarded to vLLM; the schema names what OpenAI requires."""
    schema = {
        "required": list(required),
        "properties": {"model": {"type": "string", "minLength": 1}},
    }
    return Body(description="OpenAI's request body, forwarded to vLLM.", json_schema_extra=schema)


ChatBody = Annotated[dict[str, Any], _request_body("model", "messages")]
CompletionBody = Annotated[dict[str, Any], _request_body("model", "prompt")]


async def _admitted(
    request: Request, principal: Principal, gateway: Gateway, body: dict[str, Any]
) -> None:
    """Tokens per minute: charged here; their headers join the requests-per-minute ones."""
    headers = await gateway.admit_tokens(principal, body)
    if headers:
        request.state.rate_limit_headers = {**request.state.rate_limit_headers, **headers}


@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(
    request: Request, body: ChatBody, principal: CurrentPrincipal, gateway: GatewayDep
) -> Response:
    await _admitted(request, principal, gateway, body)
    return await gateway.forward(principal, "/v1/chat/completions", body)


@router.post("/completions", responses=COMPLETION_RESPONSES)
async def completions(
    request: Request, body: CompletionBody, principal: CurrentPrincipal, gateway: GatewayDep
) -> Response:
    await _admitted(request, principal, gateway, body)
    return await gateway.forward(principal, "/v1/completions", body)


@router.post("/openft/evals", response_model=EvalReport, tags=["OpenFT extensions"])
async def create_eval(
    body: CreateEvalRequest, principal: CurrentPrincipal, runner: EvalRunnerDep
) -> EvalReport:
    """Before/after report: the file's examples answered by the fine-tuned model and by its
    base, scored against the reference answers (exact match, token F1, ROUGE-L). Synchronous;
    `limit` bounds the examples."""
    return await runner.run(principal, body)
