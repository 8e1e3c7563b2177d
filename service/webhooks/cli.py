"""``openft webhooks``: the endpoints a project's job events are delivered to (operators only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.console import err, exit_on_error
from service.db import migrate
from service.db.database import Database
from service.settings import Settings
from service.webhooks.outbox import EVENT_TYPES
from service.webhooks.service import WebhooksService

webhooks_app = typer.Typer(
    help="Webhook endpoints for fine_tuning.job.* and batch.* events.",
    no_args_is_help=True,
)


def _service() -> WebhooksService:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    migrate.upgrade(database)
    return WebhooksService(database)


@webhooks_app.command("create")
def create(
    project: Annotated[str, typer.Option(help="The project slug whose job events are sent.")],
    url: Annotated[str, typer.Option(help="Where to POST them (http:// or https://).")],
    events: Annotated[
        list[str] | None,
        typer.Option("--events", help=f"An event type (repeat; default: all of {EVENT_TYPES})."),
    ] = None,
) -> None:
    """Add an endpoint and print its signing secret on a line of its own (shown only once)."""
    with exit_on_error():
        created = _service().create(project, url, events or ())
    endpoint = created.endpoint
    err.print(f"Webhook endpoint {endpoint.id} for project '{endpoint.project_slug}' -> {url}")
    err.print(f"Events: {', '.join(endpoint.event_types)}. Its signing secret (shown only once):")
    print(created.secret, flush=True)


@webhooks_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option(help="Only this project's endpoints.")] = None,
) -> None:
    """List active endpoints (secrets are never shown again)."""
    table = Table("id", "project", "url", "events", "created")
    for endpoint in _service().list(project):
        created = datetime.fromtimestamp(endpoint.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            endpoint.id,
            endpoint.project_slug,
            endpoint.url,
            " ".join(endpoint.event_types),
            created,
        )
    Console(width=200).print(table)


@webhooks_app.command("delete")
def delete(
    endpoint_id: Annotated[str, typer.Argument(help="The endpoint id, whep_...")],
) -> None:
    """Stop sending to an endpoint; its deliveries still pending are given up."""
    with exit_on_error():
        _service().delete(endpoint_id)
    err.print(f"Deleted {endpoint_id}.")
