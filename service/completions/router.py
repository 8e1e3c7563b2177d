"""HTTP routes of Chat Completions and legacy Completions: admit the tokens, then the gateway;
completions created with ``store: true`` are kept and listed, retrieved, updated and deleted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import Body, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.completions.schemas import (
    COMPLETION_RESPONSES,
    METADATA_SCHEMA,
    ChatBody,
    CompletionBody,
)
from service.completions.stored import ChatCompletionStore, StoreRequest, checked_metadata
from service.deps import CurrentPrincipal, Gateway, Limiter, admit_tokens, provided
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router

Store = Annotated[ChatCompletionStore, provided(ChatCompletionStore)]
CHAT_PATH = "/v1/chat/completions"
METADATA_FILTER = "metadata["

router = api_router(tags=["Inference"], responses=ERROR_RESPONSES)


@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(
    request: Request,
    body: ChatBody,
    principal: CurrentPrincipal,
    limiter: Limiter,
    gateway: Gateway,
    store: Store,
) -> Response:
    """A chat completion from a base or fine-tuned model; with `store: true` it is kept (with its
    `metadata`) for the stored-completion routes below."""
    asked = StoreRequest.of(body, request.state.request_id)
    await admit_tokens(request, principal, limiter, asked.forwarded)
    if not asked.store:
        return await gateway.forward(principal, CHAT_PATH, asked.forwarded)
    if not asked.forwarded.get("stream"):
        response = await gateway.forward(principal, CHAT_PATH, asked.forwarded)
        answer = orjson.loads(response.body)
        await run_in_threadpool(store.add, principal, asked.forwarded, answer, asked)
        return response
    options = asked.forwarded.get("stream_options") or {}
    with_usage = {**options, "include_usage": True}  # stored with the completion
    response = await gateway.forward(
        principal, CHAT_PATH, {**asked.forwarded, "stream_options": with_usage}
    )
    assert isinstance(response, StreamingResponse)
    wants_usage = bool(options.get("include_usage"))
    response.body_iterator = store.recorded(principal, asked, response.body_iterator, wants_usage)
    return response


@router.get("/chat/completions")
async def list_chat_completions(
    request: Request,
    principal: CurrentPrincipal,
    store: Store,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSONResponse:
    """The project's stored chat completions, newest first unless `order=asc` (as
    api.openai.com answers; its spec says asc), filtered by `model` and `metadata[key]=value`."""
    wanted = {
        key[len(METADATA_FILTER) : -1]: value
        for key, value in request.query_params.items()
        if key.startswith(METADATA_FILTER) and key.endswith("]")
    }
    metadata = checked_metadata(wanted)
    page = await run_in_threadpool(
        store.page, principal, model=model, metadata=metadata, limit=limit, order=order,
        after=after,
    )  # fmt: skip
    return JSONResponse(page)


@router.get("/chat/completions/{completion_id}")
async def retrieve_chat_completion(
    completion_id: str, principal: CurrentPrincipal, store: Store
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(store.retrieve, principal, completion_id))


UPDATE_BODY = Body(
    description="Only `metadata` can change: it replaces the stored one (null clears it).",
    json_schema_extra={
        "required": ["metadata"],
        "additionalProperties": False,
        "properties": {"metadata": METADATA_SCHEMA},
    },
)


@router.post("/chat/completions/{completion_id}")
async def update_chat_completion(
    completion_id: str,
    body: Annotated[dict[str, Any], UPDATE_BODY],
    principal: CurrentPrincipal,
    store: Store,
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(store.update, principal, completion_id, body))


@router.delete("/chat/completions/{completion_id}")
async def delete_chat_completion(
    completion_id: str, principal: CurrentPrincipal, store: Store
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(store.delete, principal, completion_id))


@router.get("/chat/completions/{completion_id}/messages")
async def list_chat_completion_messages(
    completion_id: str,
    principal: CurrentPrincipal,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "asc",
    after: str | None = None,
) -> JSONResponse:
    """The messages the completion was asked with (not its answer), oldest first."""
    page = await run_in_threadpool(
        store.messages, principal, completion_id, limit=limit, order=order, after=after
    )
    return JSONResponse(page)


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
