"""The Responses API's rules: a response is a chat completion served through the gateway (the same
ownership, usage, cost, metrics and drift), stored per project when ``store`` is on, and chained
with ``previous_response_id`` by replaying the earlier turns from the database."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from service.auth.principal import Principal
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import StoredResponse
from service.errors import InvalidRequestError, NotFoundError
from service.gateway import ModelGateway
from service.ids import new_response_id
from service.pagination import Order, page_in_memory
from service.responses import repository
from service.responses.request import ResponseRequest, parse_request
from service.responses.stream import ResponseEvents, sse
from service.responses.translate import (
    Item,
    chat_request,
    output_items,
    response_object,
    response_usage,
)
from service.settings import Settings

log = logging.getLogger(__name__)
DAY_S = 86_400


def response_not_found(response_id: str) -> NotFoundError:
    """api.openai.com's 404 for a response that is not there (never stored, deleted, expired or
    another project's)."""
    return NotFoundError(f"Response with id '{response_id}' not found.")


@dataclass(frozen=True)
class PreparedResponse:
    """A checked request, its id and creation time, and the chat completion that serves it."""

    request: ResponseRequest
    chain: list[Item]  # the input items of the whole chain, oldest first (what is stored)
    chat: dict[str, Any]
    response_id: str
    created_at: int

    def response(self, status: str, output: list[Item], usage: dict[str, Any] | None) -> Any:
        return response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            status=status,
            output=output,
            usage=usage,
            completed_at=int(time.time()) if status != "in_progress" else None,
        )


class ResponsesService:
    def __init__(self, db: Database, gateway: ModelGateway, settings: Settings) -> None:
        self.db = db
        self.gateway = gateway
        self.retention_s = settings.response_retention_days * DAY_S

    def prepare(self, principal: Principal, body: dict[str, Any]) -> PreparedResponse:
        """Check ``body`` and replay its previous responses (this project's only)."""
        request = parse_request(body)
        history: list[Item] = []
        if request.previous_response_id is not None:
            history = self._history(principal, request.previous_response_id)
        return PreparedResponse(
            request=request,
            chain=[*history, *request.items],
            chat=chat_request(request, history),
            response_id=new_response_id(),
            created_at=int(time.time()),
        )

    def _history(self, principal: Principal, previous_id: str) -> list[Item]:
        with self.db.read() as session:
            row = repository.get(session, principal.project_id, previous_id, database_now(session))
            if row is None:
                raise InvalidRequestError(
                    f"Previous response with id '{previous_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            return [*row.input_items, *row.response["output"]]

    async def create(self, principal: Principal, prepared: PreparedResponse) -> dict[str, Any]:
        completion = await self.gateway.completion(principal, prepared.chat)
        output, truncated = output_items(completion)
        status = "incomplete" if truncated else "completed"
        answer = prepared.response(status, output, response_usage(completion.get("usage")))
        if prepared.request.store:
            await run_in_threadpool(self._store, principal, prepared, answer)
        return dict(answer)

    async def input_tokens(
        self, principal: Principal, prepared: PreparedResponse
    ) -> dict[str, Any]:
        """How many input tokens the response would take: its chat request's prompt, the
        replayed chain, instructions and tools included, counted by the model's server."""
        count = await self.gateway.count_tokens(principal, prepared.chat)
        return {"object": "response.input_tokens", "input_tokens": count}

    async def stream(
        self, principal: Principal, prepared: PreparedResponse
    ) -> AsyncIterator[bytes]:
        """The response's server-sent events; a request the gateway refuses raises here."""
        chunks = await self.gateway.completion_chunks(principal, prepared.chat)
        return self._events(principal, prepared, chunks)

    async def _events(
        self,
        principal: Principal,
        prepared: PreparedResponse,
        chunks: AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[bytes]:
        events = ResponseEvents(prepared.response("in_progress", [], None), prepared.response)
        for event in events.start():
            yield sse(event)
        try:
            async for chunk in chunks:
                for event in events.feed(chunk):
                    yield sse(event)
        except Exception:  # the model server went away mid-answer: say so, as OpenAI does
            log.exception("streaming response %s failed", prepared.response_id)
            for event in events.failed("The model server stopped answering; retry the request."):
                yield sse(event)
            return
        last = events.finish()
        if prepared.request.store and events.final is not None:
            await run_in_threadpool(self._store, principal, prepared, events.final)
        for event in last:
            yield sse(event)

    def _store(
        self, principal: Principal, prepared: PreparedResponse, answer: dict[str, Any]
    ) -> None:
        with self.db.write() as session:
            now = database_now(session)
            session.add(
                StoredResponse(
                    id=prepared.response_id,
                    project_id=principal.project_id,
                    created_at=prepared.created_at,
                    expires_at=now + self.retention_s if self.retention_s else None,
                    model=prepared.request.model,
                    input_items=prepared.chain,
                    response=answer,
                )
            )

    def retrieve(self, principal: Principal, response_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = self._get(session, principal, response_id)
            return dict(row.response)

    def delete(self, principal: Principal, response_id: str) -> dict[str, Any]:
        with self.db.write() as session:
            if not repository.remove(
                session, principal.project_id, response_id, database_now(session)
            ):
                raise response_not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    def cancel(self, principal: Principal, response_id: str) -> dict[str, Any]:
        """Only background responses can be cancelled, and OpenFT answers none in the background."""
        self.retrieve(principal, response_id)  # 404 first, as for any other id
        raise InvalidRequestError(
            "Cannot cancel a synchronous response.", param="response_id", code="invalid_request"
        )

    def input_items(
        self, principal: Principal, response_id: str, *, limit: int, order: Order, after: str | None
    ) -> dict[str, Any]:
        """The chain's input items, newest first by default, paged with ``after``."""
        with self.db.read() as session:
            items = list(self._get(session, principal, response_id).input_items)
        return page_in_memory(
            items,
            limit=limit,
            order=order,
            after=after,
            unknown_after=lambda item_id: NotFoundError(
                f"Item with id '{item_id}' not found in response '{response_id}'.", param="after"
            ),
        )

    def purge_expired(self) -> int:
        with self.db.write() as session:
            return repository.remove_expired(session, database_now(session))

    @staticmethod
    def _get(session: Any, principal: Principal, response_id: str) -> StoredResponse:
        row = repository.get(session, principal.project_id, response_id, database_now(session))
        if row is None:
            raise response_not_found(response_id)
        return row
