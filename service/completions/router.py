"""HTTP routes of Chat Completions and legacy Completions: admit the tokens, then the gateway."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from service.auth.principal import Principal
from service.completions.schemas import COMPLETION_RESPONSES, ChatBody, CompletionBody
from service.deps import CurrentPrincipal, Gateway, Limiter
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.limits import RateLimiter

router = api_router(tags=["Inference"], responses=ERROR_RESPONSES)


async def _admitted(
    request: Request, principal: Principal, limiter: RateLimiter, body: dict[str, Any]
) -> None:
    """Tokens per minute: charged here; their headers join the requests-per-minute ones."""
    headers = await limiter.admit_tokens(principal, [body])
    if headers:
        request.state.rate_limit_headers = {**request.state.rate_limit_headers, **headers}


@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(
    request: Request,
    body: ChatBody,
    principal: CurrentPrincipal,
    limiter: Limiter,
    gateway: Gateway,
) -> Response:
    await _admitted(request, principal, limiter, body)
    return await gateway.forward(principal, "/v1/chat/completions", body)


@router.post("/completions", responses=COMPLETION_RESPONSES)
async def completions(
    request: Request,
    body: CompletionBody,
    principal: CurrentPrincipal,
    limiter: Limiter,
    gateway: Gateway,
) -> Response:
    await _admitted(request, principal, limiter, body)
    return await gateway.forward(principal, "/v1/completions", body)
