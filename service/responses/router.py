"""HTTP routes of the Responses API (``/v1/responses``); rules live in ``ResponsesService``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Body, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.deps import CurrentPrincipal, Limiter, admit_tokens, provided
from service.errors import InvalidRequestError
from service.http.error_responses import ERROR_RESPONSES
from service.http.json_body import api_router
from service.responses.service import ResponsesService

Responses = Annotated[ResponsesService, provided(ResponsesService)]

router = api_router(tags=["Responses"], responses=ERROR_RESPONSES)

_TEXT_OR_NULL = {"type": ["string", "null"]}
_FLAG = {"type": ["boolean", "null"]}
RESPONSE_BODY = Body(
    description="OpenAI's CreateResponse body (README: the Responses API says which fields are "
    "honoured, ignored or refused).",
    json_schema_extra={
        "required": ["model", "input"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "object"}},
                ]
            },
            "instructions": _TEXT_OR_NULL,
            "previous_response_id": _TEXT_OR_NULL,
            "store": _FLAG,
            "stream": _FLAG,
            "stream_options": {"type": ["object", "null"]},
            "metadata": {
                "type": ["object", "null"],
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 512},
            },
            "max_output_tokens": {"type": ["integer", "null"], "minimum": 16},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "parallel_tool_calls": _FLAG,
            "max_tool_calls": {"type": ["integer", "null"]},
            "text": {"type": "object"},
            "include": {"type": ["array", "null"], "items": {"type": "string"}},
            "user": {"type": "string"},
            "safety_identifier": {"type": "string"},
            "prompt_cache_key": {"type": "string"},
            "prompt_cache_retention": _TEXT_OR_NULL,
            "service_tier": _TEXT_OR_NULL,
            "truncation": _TEXT_OR_NULL,
            "background": _FLAG,
            "reasoning": {"type": ["object", "null"]},
            "top_logprobs": {"type": ["integer", "null"]},
            "conversation": {},
            "prompt": {},
        },
    },
)
JSON_OR_EVENTS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


@router.post("/responses", responses=JSON_OR_EVENTS)
async def create_response(
    request: Request,
    body: Annotated[dict[str, Any], RESPONSE_BODY],
    principal: CurrentPrincipal,
    limiter: Limiter,
    responses: Responses,
) -> Response:
    """A model response (text, function calls, structured output), stored unless `store` is
    false; `stream` answers with OpenAI's Responses events."""
    prepared = await run_in_threadpool(responses.prepare, principal, body)
    await admit_tokens(request, principal, limiter, prepared.chat)
    if prepared.request.stream:
        events = await responses.stream(principal, prepared)
        return StreamingResponse(events, media_type="text/event-stream; charset=utf-8")
    return JSONResponse(await responses.create(principal, prepared))


@router.post("/responses/input_tokens")
async def count_input_tokens(
    body: Annotated[dict[str, Any], RESPONSE_BODY],
    principal: CurrentPrincipal,
    responses: Responses,
) -> JSONResponse:
    """The input tokens a response to this body would take (instructions, the chain replayed
    from `previous_response_id` and tools included), counted by the model's server; nothing is
    generated or stored."""
    prepared = await run_in_threadpool(responses.prepare, principal, {**body, "store": False})
    return JSONResponse(await responses.input_tokens(principal, prepared))


@router.get("/responses/{response_id}")
async def retrieve_response(
    response_id: str,
    principal: CurrentPrincipal,
    responses: Responses,
    stream: bool = False,
) -> JSONResponse:
    if stream:
        raise InvalidRequestError(
            "Streaming a stored response is for background responses, which OpenFT does not "
            "run; retrieve it without stream.",
            param="stream",
        )
    return JSONResponse(await run_in_threadpool(responses.retrieve, principal, response_id))


@router.delete("/responses/{response_id}")
async def delete_response(
    response_id: str, principal: CurrentPrincipal, responses: Responses
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(responses.delete, principal, response_id))


@router.post("/responses/{response_id}/cancel")
async def cancel_response(
    response_id: str, principal: CurrentPrincipal, responses: Responses
) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(responses.cancel, principal, response_id))


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    principal: CurrentPrincipal,
    responses: Responses,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSONResponse:
    page = await run_in_threadpool(
        responses.input_items, principal, response_id, limit=limit, order=order, after=after
    )
    return JSONResponse(page)
