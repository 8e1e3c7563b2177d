"""What the completion routes document: OpenAI's request bodies are forwarded as sent (vLLM reads
them), so the schema names only what OpenAI requires; answers are JSON or server-sent events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body

# ``stream: true`` answers with server-sent events, passed through from vLLM.
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


# OpenAI's metadata: at most 16 keys of 64 characters, string values of 512.
METADATA_SCHEMA = {
    "type": ["object", "null"],
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
}


def _request_body(*required: str, **properties: Any) -> Any:
    """OpenAI's request body, forwarded to vLLM; the schema names what OpenAI requires and what
    OpenFT itself reads."""
    schema = {
        "required": list(required),
        "properties": {"model": {"type": "string", "minLength": 1}, **properties},
    }
    return Body(description="OpenAI's request body, forwarded to vLLM.", json_schema_extra=schema)


ChatBody = Annotated[
    dict[str, Any],
    _request_body(
        "model",
        "messages",
        # OpenFT's, never forwarded: keep the completion for the stored-completion routes.
        store={"type": ["boolean", "null"]},
        metadata=METADATA_SCHEMA,
    ),
]
CompletionBody = Annotated[dict[str, Any], _request_body("model", "prompt")]
