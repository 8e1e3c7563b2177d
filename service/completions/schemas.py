"""What the completion routes document: OpenAI's request bodies are forwarded as sent (vLLM reads
them), so the schema names only what OpenAI requires; answers are JSON or server-sent events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body

# ``stream: true`` answers with server-sent events, passed through from vLLM.
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


def _request_body(*required: str) -> Any:
    """OpenAI's request body, forwarded to vLLM; the schema names what OpenAI requires."""
    schema = {
        "required": list(required),
        "properties": {"model": {"type": "string", "minLength": 1}},
    }
    return Body(description="OpenAI's request body, forwarded to vLLM.", json_schema_extra=schema)


ChatBody = Annotated[dict[str, Any], _request_body("model", "messages")]
CompletionBody = Annotated[dict[str, Any], _request_body("model", "prompt")]
