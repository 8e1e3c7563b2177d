"""OpenAI wire shapes of the Batch API (field order as api.openai.com sends it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.db.models import Batch

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
TERMINAL: tuple[str, ...] = ("failed", "completed", "expired", "cancelled")
OUTPUT_EXPIRY_MIN_S = 3600
OUTPUT_EXPIRY_MAX_S = 30 * 24 * 3600


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=OUTPUT_EXPIRY_MIN_S, le=OUTPUT_EXPIRY_MAX_S)


class CreateBatchRequest(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(description="A file of purpose `batch`: one request per line.")
    endpoint: str = Field(
        description="`/v1/chat/completions`, `/v1/completions` or `/v1/responses`: the URL "
        "every line calls."
    )
    completion_window: Literal["24h"] = Field(
        description="The only window OpenAI offers; lines not run by then end `batch_expired`."
    )
    metadata: dict[str, str] | None = None
    output_expires_after: OutputExpiresAfter | None = Field(
        default=None,
        description="When the output and error files expire (default: 30 days after they are "
        "written).",
    )


def batch_object(row: Batch) -> dict[str, Any]:
    """The batch as api.openai.com answers it."""
    errors = None if row.errors is None else {"object": "list", "data": row.errors}
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "usage": {
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "total_tokens": row.input_tokens + row.output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        "metadata": row.metadata_,
    }
