"""Distillation, as OpenAI's dashboard offered it: a project's stored chat completions and
responses, filtered by model, metadata and time, written as a chat training file in its Files
(one conversation per line: the request's messages and the answer, with the tools offered)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from service.auth.principal import Principal
from service.blobstore import BlobStore
from service.completions.stored import checked_metadata
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import StoredChatCompletion, StoredResponse
from service.errors import InvalidRequestError
from service.files.schemas import FileObject
from service.files.service import FilesService
from service.responses.translate import chat_messages, chat_tool

Source = Literal["chat_completions", "responses"]
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
MAX_EXAMPLES = 50_000
FILTERS = ("model", "metadata", "created_after", "created_before")
Json = dict[str, Any]


class DistillationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        min_length=1,
        description="Only answers of this model (the teacher), as it was called.",
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None,
        max_length=16,
        description="Only those stored with every one of these metadata values.",
    )
    created_after: int | None = Field(
        default=None, ge=0, description="Only those created at or after this Unix time."
    )
    created_before: int | None = Field(
        default=None, ge=0, description="Only those created before this Unix time."
    )
    sources: list[Source] = Field(
        default=["chat_completions", "responses"],
        min_length=1,
        description="Stored chat completions (`store: true`), stored responses, or both.",
    )
    limit: int = Field(
        default=MAX_EXAMPLES, ge=1, le=MAX_EXAMPLES, description="At most this many, newest first."
    )


class Distillation(BaseModel):
    object: Literal["openft.distillation"] = "openft.distillation"
    file: FileObject = Field(description="The training file (purpose `fine-tune`).")
    examples: int = Field(description="Lines written.")
    chat_completions: int = Field(description="Of them, from stored chat completions.")
    responses: int = Field(description="Of them, from stored responses.")
    skipped: int = Field(
        description="Matches left out: cut off at the token limit, failed, or with no answer."
    )


def completion_example(row: StoredChatCompletion) -> Json | None:
    """A stored chat completion as one training conversation; None when it has no whole answer."""
    (choice, *_) = row.completion.get("choices") or [None]
    if choice is None or choice.get("finish_reason") not in ("stop", "tool_calls"):
        return None
    message = choice.get("message") or {}
    answer: Json = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        answer["tool_calls"] = message["tool_calls"]
    elif not answer["content"]:
        return None
    example: Json = {"messages": [*row.messages, answer]}
    if row.completion.get("tools"):
        example["tools"] = row.completion["tools"]
    return example


def response_example(row: StoredResponse) -> Json | None:
    """A stored response (its whole ``previous_response_id`` chain) as one training
    conversation; None unless it completed with an answer."""
    response = row.response
    if response.get("status") != "completed" or not response.get("output"):
        return None
    messages = chat_messages(response.get("instructions"), [*row.input_items, *response["output"]])
    if messages[-1]["role"] != "assistant":
        return None
    example: Json = {"messages": messages}
    tools = [chat_tool(tool) for tool in response.get("tools") or [] if tool["type"] == "function"]
    if tools:
        example["tools"] = tools
    return example


class Distiller:
    def __init__(self, db: Database, blobs: BlobStore, files: FilesService) -> None:
        self.db = db
        self.blobs = blobs
        self.files = files

    def distill(self, principal: Principal, request: DistillationRequest) -> Distillation:
        metadata = checked_metadata(request.metadata)
        with self.db.read() as session:
            now = database_now(session)
            found: list[tuple[int, Source, Json | None]] = []
            if "chat_completions" in request.sources:
                found += [
                    (row.created_at, "chat_completions", completion_example(row))
                    for row in self._completions(session, principal, request, metadata, now)
                ]
            if "responses" in request.sources:
                found += [
                    (row.created_at, "responses", response_example(row))
                    for row in self._responses(session, principal, request, metadata, now)
                ]
        found.sort(key=lambda match: match[0], reverse=True)
        kept = [(source, example) for _, source, example in found if example is not None]
        kept = kept[: request.limit]
        if not kept:
            filters = [name for name in FILTERS if getattr(request, name) is not None]
            raise InvalidRequestError(
                f"No stored chat completion or response matches ({len(found)} matched without a "
                "whole answer): store them with `store: true` and check the filters.",
                param=filters[0] if filters else "sources",
            )
        blob = self.blobs.stage()
        try:
            for _, example in kept:
                blob.write(orjson.dumps(example) + b"\n")
        except BaseException:
            blob.abort()
            raise
        filename = time.strftime("distillation-%Y%m%d-%H%M%S.jsonl", time.gmtime())
        file = self.files.store(
            principal, blob, purpose="fine-tune", filename=filename, expires_at=None
        )
        return Distillation(
            file=file,
            examples=len(kept),
            chat_completions=sum(source == "chat_completions" for source, _ in kept),
            responses=sum(source == "responses" for source, _ in kept),
            skipped=len(found) - sum(1 for *_, example in found if example is not None),
        )

    @staticmethod
    def _completions(
        session: Session,
        principal: Principal,
        request: DistillationRequest,
        metadata: dict[str, str],
        now: int,
    ) -> list[StoredChatCompletion]:
        table = StoredChatCompletion
        query = _matching(table, principal, request, now).where(
            *[table.metadata_[key].as_string() == value for key, value in metadata.items()]
        )
        return list(session.scalars(query.order_by(table.seq.desc()).limit(request.limit)))

    @staticmethod
    def _responses(
        session: Session,
        principal: Principal,
        request: DistillationRequest,
        metadata: dict[str, str],
        now: int,
    ) -> list[StoredResponse]:
        table = StoredResponse
        query = _matching(table, principal, request, now)
        rows = session.scalars(query.order_by(table.seq.desc()))
        matching = (
            row
            for row in rows
            if all((row.response.get("metadata") or {}).get(k) == v for k, v in metadata.items())
        )
        return [row for _, row in zip(range(request.limit), matching, strict=False)]


def _matching(
    table: type[StoredChatCompletion] | type[StoredResponse],
    principal: Principal,
    request: DistillationRequest,
    now: int,
) -> Select[Any]:
    """The project's live stored rows of ``table`` within the request's model and time filters."""
    query = select(table).where(
        table.project_id == principal.project_id,
        (table.expires_at.is_(None)) | (table.expires_at > now),
    )
    if request.model is not None:
        query = query.where(table.model == request.model)
    if request.created_after is not None:
        query = query.where(table.created_at >= request.created_after)
    if request.created_before is not None:
        query = query.where(table.created_at < request.created_before)
    return query
