"""HTTP routes of the inference gateway: OpenAI's Chat Completions and legacy Completions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from inference.gateway import Gateway
from service.deps import CurrentPrincipal

router = APIRouter(tags=["Inference"])


def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


GatewayDep = Annotated[Gateway, Depends(gateway)]
RequestBody = Annotated[
    dict[str, Any], Body(description="OpenAI's request body, forwarded to vLLM.")
]


@router.post("/chat/completions")
async def chat_completions(
    body: RequestBody, principal: CurrentPrincipal, gateway: GatewayDep
) -> Response:
    return await gateway.forward(principal, "/v1/chat/completions", body)


@router.post("/completions")
async def completions(
    body: RequestBody, principal: CurrentPrincipal, gateway: GatewayDep
) -> Response:
    return await gateway.forward(principal, "/v1/completions", body)
