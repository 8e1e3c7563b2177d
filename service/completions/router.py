"""HTTP routes of Chat Completions and legacy Completions: admit the tokens, then the gateway."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from service.completions.schemas import COMPLETION_RESPONSES, ChatBody, CompletionBody
from service.deps import CurrentPrincipal, Gateway, Limiter, admit_tokens
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

router = api_router(tags=["Inference"], responses=ERROR_RESPONSES)


@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(
    request: Request,
    body: ChatBody,
    principal: CurrentPrincipal,
    limiter: Limiter,
    gateway: Gateway,
) -> Response:
    await admit_tokens(request, principal, limiter, body)
    return await gateway.forward(principal, "/v1/chat/completions", body)


@router.post("/completions", responses=COMPLETION_RESPONSES)
async def completions(
    request: Request,
    body: CompletionBody,
    principal: CurrentPrincipal,
    limiter: Limiter,
    gateway: Gateway,
) -> Response:
    await admit_tokens(request, principal, limiter, body)
    return await gateway.forward(principal, "/v1/completions", body)
