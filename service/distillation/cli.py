"""``openft distill``: a training file from stored completions and responses, through the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from service.console import err
from service.jobs.cli import DEFAULT_BASE_URL, ApiKey, BaseUrl, client_for, or_exit


def _unix_time(value: str | None) -> int | None:
    """Unix seconds, or an ISO 8601 date/time (UTC unless it names its zone)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is neither Unix seconds nor ISO 8601") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def distill(
    model: Annotated[
        str | None, typer.Option(help="Only answers of this model (the teacher).")
    ] = None,
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE the stored metadata must hold (repeat).")
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="Created at or after (Unix seconds or ISO 8601, UTC).")
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Created before (Unix seconds or ISO 8601, UTC).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="chat_completions or responses (default: both).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N, newest first.")] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """Write the project's stored chat completions and responses (``store: true``) that match
    into a chat training file in its Files and print the file's id:
    ``openft jobs create $(openft distill --model big --metadata task=support) --model small``."""
    api = client_for(base_url, api_key)
    body: dict[str, Any] = {}
    if model is not None:
        body["model"] = model
    if metadata:
        pairs = [item.partition("=") for item in metadata]
        if any(not sep or not key for key, sep, _ in pairs):
            raise typer.BadParameter("--metadata takes KEY=VALUE")
        body["metadata"] = {key: value for key, _, value in pairs}
    for name, value in (("created_after", after), ("created_before", before)):
        if (moment := _unix_time(value)) is not None:
            body[name] = moment
    if source:
        body["sources"] = source
    if limit is not None:
        body["limit"] = limit
    done = or_exit(lambda: api.call("POST", "/openft/distillations", json=body))
    err.print(
        f"Wrote {done['examples']} examples ({done['chat_completions']} chat completions, "
        f"{done['responses']} responses; {done['skipped']} without a whole answer left out) "
        f"to {done['file']['filename']}"
    )
    print(done["file"]["id"])
