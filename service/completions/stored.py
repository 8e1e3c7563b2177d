"""Stored chat completions: ``store: true`` on ``POST /v1/chat/completions`` keeps the request's
messages and the answer per project, in the shape api.openai.com lists, retrieves and updates
(which is not the create response's), until the retention ends."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from service import sse
from service.auth.principal import Principal
from service.completions import repository
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import StoredChatCompletion
from service.errors import InvalidRequestError, NotFoundError
from service.pagination import Order, list_envelope, page_in_memory, split_page
from service.settings import Settings

log = logging.getLogger(__name__)
DAY_S = 86_400
METADATA_KEYS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
Json = dict[str, Any]


def completion_not_found(completion_id: str) -> NotFoundError:
    """api.openai.com's 404 for a completion that is not stored (never, deleted, expired or
    another project's)."""
    return NotFoundError(
        f"Completion {completion_id} not found", param="completion_id", code="not_found"
    )


def checked_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string keys of 64 characters, values of 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"'{param}' must be an object of strings.", param=param)
    if len(value) > METADATA_KEYS:
        raise InvalidRequestError(
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{METADATA_KEYS} properties, but got an object with {len(value)} properties instead.",
            param=param,
        )
    for key, item in value.items():
        if len(key) > METADATA_KEY_CHARS:
            raise InvalidRequestError(
                f"Invalid '{param}': key '{key[:80]}' is longer than {METADATA_KEY_CHARS} "
                "characters.",
                param=f"{param}.{key[:80]}",
            )
        if not isinstance(item, str) or len(item) > METADATA_VALUE_CHARS:
            raise InvalidRequestError(
                f"Invalid '{param}.{key}': expected a string of at most {METADATA_VALUE_CHARS} "
                "characters.",
                param=f"{param}.{key}",
            )
    return dict(value)


@dataclass(frozen=True)
class StoreRequest:
    """What ``store`` and ``metadata`` ask of a chat completion, and the body vLLM gets (without
    them: they are OpenFT's to honour)."""

    store: bool
    metadata: dict[str, str]
    forwarded: Json
    request_id: str  # the x-request-id the answer carries; stored as ``request_id``

    @classmethod
    def of(cls, body: Json, request_id: str) -> StoreRequest:
        store = body.get("store")
        if store is not None and not isinstance(store, bool):
            raise InvalidRequestError("'store' must be a boolean.", param="store")
        metadata = checked_metadata(body.get("metadata"))
        forwarded = {k: v for k, v in body.items() if k not in ("store", "metadata")}
        return cls(bool(store), metadata, forwarded, request_id)


def stored_object(body: Json, answer: Json, metadata: dict[str, str], request_id: str) -> Json:
    """The stored completion as api.openai.com lists it: the request's sampling settings beside
    the answer, usage without details, messages without annotations."""
    usage = answer.get("usage") or {}
    choices = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        choices.append(
            {
                "index": choice.get("index", 0),
                "message": {
                    "content": message.get("content"),
                    "role": message.get("role", "assistant"),
                    "tool_calls": message.get("tool_calls") or None,
                    "function_call": None,
                    "refusal": None,  # api.openai.com leaves it out; OpenAI's spec requires it
                },
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    stored = {
        "object": "chat.completion",
        "id": answer["id"],
        "model": answer.get("model") or body.get("model"),
        "created": answer.get("created"),
        "request_id": request_id,
        "tool_choice": body.get("tool_choice"),
        "usage": {
            "total_tokens": usage.get("total_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0),
        },
        "seed": body.get("seed"),
        "top_p": float(body.get("top_p", 1.0)),
        "temperature": float(body.get("temperature", 1.0)),
        "presence_penalty": float(body.get("presence_penalty", 0.0)),
        "frequency_penalty": float(body.get("frequency_penalty", 0.0)),
        "system_fingerprint": answer.get("system_fingerprint"),
        "input_user": body.get("user"),
        "service_tier": answer.get("service_tier") or "default",
        "tools": body.get("tools"),
        "metadata": metadata,
        "choices": choices,
        "response_format": body.get("response_format"),
    }
    if stored["system_fingerprint"] is None:  # a string or left out, in OpenAI's spec
        del stored["system_fingerprint"]
    return stored


def listed_message(completion_id: str, index: int, message: Json) -> Json:
    """A request message as ``GET .../messages`` lists it: text parts joined into ``content``,
    the parts themselves in ``content_parts``."""
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = [
            {
                "type": part.get("type"),
                "text": part.get("text"),
                "image_url": part.get("image_url"),
                "input_audio": part.get("input_audio"),
                "file": part.get("file"),
            }
            for part in content
            if isinstance(part, dict)
        ]
        content = "".join(p["text"] for p in parts if isinstance(p["text"], str))
    listed = {
        "id": f"{completion_id}-{index}",
        "role": message.get("role"),
        "content": content,
        "content_parts": parts,
        "name": message.get("name"),
    }
    for key in ("tool_calls", "tool_call_id"):  # a tool round trip, as it was sent
        if message.get(key) is not None:
            listed[key] = message[key]
    return listed


@dataclass
class StreamedCompletion:
    """Builds the completion a stream carried from its chunks (text, tool call deltas, finish
    reasons, the usage chunk)."""

    answer: Json = field(default_factory=dict)
    _choices: dict[int, Json] = field(default_factory=dict)

    def feed(self, chunk: Json) -> None:
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.answer[key] = chunk[key]
        if chunk.get("usage"):
            self.answer["usage"] = chunk["usage"]
        for delta_choice in chunk.get("choices") or []:
            index = delta_choice.get("index", 0)
            choice = self._choices.setdefault(
                index, {"index": index, "message": {"role": "assistant", "content": None}}
            )
            message, delta = choice["message"], delta_choice.get("delta") or {}
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                _add_tool_call_delta(message.setdefault("tool_calls", []), call)
            if delta_choice.get("finish_reason") is not None:
                choice["finish_reason"] = delta_choice["finish_reason"]
            if delta_choice.get("logprobs") is not None:
                choice["logprobs"] = delta_choice["logprobs"]

    def completion(self) -> Json:
        return {**self.answer, "choices": [self._choices[i] for i in sorted(self._choices)]}


def _add_tool_call_delta(calls: list[Json], delta: Json) -> None:
    index = delta.get("index", 0)
    while len(calls) <= index:
        calls.append({"type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        calls[index]["id"] = delta["id"]
    function = delta.get("function") or {}
    calls[index]["function"]["name"] += function.get("name") or ""
    calls[index]["function"]["arguments"] += function.get("arguments") or ""


class ChatCompletionStore:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.retention_s = settings.chat_completion_retention_days * DAY_S

    def add(self, principal: Principal, body: Json, answer: Json, request: StoreRequest) -> None:
        """Keep a completion the client asked to store (its id is the answer's)."""
        stored = stored_object(body, answer, request.metadata, request.request_id)
        with self.db.write() as session:
            now = database_now(session)
            session.add(
                StoredChatCompletion(
                    id=stored["id"],
                    project_id=principal.project_id,
                    created_at=int(stored["created"] or now),
                    expires_at=now + self.retention_s if self.retention_s else None,
                    model=str(stored["model"]),
                    metadata_=request.metadata,
                    messages=list(body.get("messages") or []),
                    completion=stored,
                )
            )

    async def recorded(
        self,
        principal: Principal,
        request: StoreRequest,
        events: AsyncIterable[bytes | str | memoryview],
        client_wants_usage: bool,
    ) -> AsyncIterator[bytes]:
        """Pass a stream's events through and store its completion before ``[DONE]``; the
        stream was asked for usage (to store it), which the client sees only if it asked too."""
        streamed = StreamedCompletion()
        try:
            async for raw in events:
                data = raw.encode() if isinstance(raw, str) else bytes(raw)
                kept = []  # a read of the relay may hold several events
                for event in sse.events(data):
                    chunk = sse.chunk_of(event)
                    if chunk is not None:
                        streamed.feed(chunk)
                        if sse.is_usage_only(chunk) and not client_wants_usage:
                            continue
                    elif sse.payload(event) == sse.DONE and streamed.answer.get("id"):
                        await run_in_threadpool(
                            self.add, principal, request.forwarded, streamed.completion(), request
                        )
                    kept.append(event)
                if kept:
                    yield b"".join(kept)
        finally:  # also when the client goes: closing the relay aborts vLLM's answer and counts
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    def page(
        self,
        principal: Principal,
        *,
        model: str | None,
        metadata: dict[str, str],
        limit: int,
        order: Order,
        after: str | None,
    ) -> Json:
        with self.db.read() as session:
            rows = repository.page(
                session,
                principal.project_id,
                database_now(session),
                model=model,
                metadata=metadata,
                limit=limit,
                order=order,
                after=after,
            )
            items, has_more = split_page([row.completion for row in rows], limit)
        return list_envelope(items, has_more)

    def retrieve(self, principal: Principal, completion_id: str) -> Json:
        with self.db.read() as session:
            return dict(self._get(session, principal, completion_id).completion)

    def update(self, principal: Principal, completion_id: str, body: Json) -> Json:
        """Only ``metadata`` can change; it is replaced by the one sent (null clears it)."""
        unknown = sorted(set(body) - {"metadata"})
        if unknown:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {unknown[0]}. Only 'metadata' can be "
                "updated on a stored chat completion.",
                param=unknown[0],
            )
        if "metadata" not in body:
            raise InvalidRequestError(
                "Missing required parameter: 'metadata'.",
                param="metadata",
                code="missing_required_parameter",
            )
        metadata = checked_metadata(body["metadata"])
        with self.db.write() as session:
            row = self._get(session, principal, completion_id)
            row.metadata_ = metadata
            row.completion = {**row.completion, "metadata": metadata}
            return dict(row.completion)

    def delete(self, principal: Principal, completion_id: str) -> Json:
        with self.db.write() as session:
            if not repository.remove(
                session, principal.project_id, completion_id, database_now(session)
            ):
                raise completion_not_found(completion_id)
        return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}

    def messages(
        self,
        principal: Principal,
        completion_id: str,
        *,
        limit: int,
        order: Order,
        after: str | None,
    ) -> Json:
        """The request's messages (not the answer), oldest first by default, paged by id."""
        with self.db.read() as session:
            sent = list(self._get(session, principal, completion_id).messages)
        return page_in_memory(
            [listed_message(completion_id, i, m) for i, m in enumerate(sent)],
            limit=limit,
            order=order,
            after=after,
            unknown_after=lambda message_id: NotFoundError(
                f"Message with id '{message_id}' not found in completion {completion_id}.",
                param="after",
            ),
        )

    def purge_expired(self) -> int:
        with self.db.write() as session:
            return repository.remove_expired(session, database_now(session))

    @staticmethod
    def _get(session: Any, principal: Principal, completion_id: str) -> StoredChatCompletion:
        row = repository.get(session, principal.project_id, completion_id, database_now(session))
        if row is None:
            raise completion_not_found(completion_id)
        return row
