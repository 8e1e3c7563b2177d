"""The ``openft`` command line: serve the API, manage API keys, follow fine-tuning jobs.

Every command brings the database schema up to date first, so each works in an empty folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from inference.vllm_fleet import VLLMFleet
from service import drift_report as drift_report_module
from service import usage
from service.app import create_app
from service.auth.service import AccessService
from service.blobstore import copy_blobs, open_blob_location, open_blob_store
from service.completions.cli import ask
from service.console import err, exit_on_error
from service.db import migrate
from service.db.database import Database
from service.distillation.cli import distill
from service.evals.cli import evaluate
from service.jobs.cli import jobs_app
from service.logs import configure_logging
from service.metrics import MULTIPROCESS_DIR_ENV
from service.models.cli import register as register_model_transfer
from service.settings import SMOLLM2_MODEL_NAME, Settings
from service.supervisor import Supervisor, python_module_command
from service.webhooks.cli import webhooks_app

app = typer.Typer(help="OpenFT: self-hosted, OpenAI-compatible fine-tuning.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
models_app = typer.Typer(help="Base models.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
projects_app = typer.Typer(help="Projects and their caps.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")
usage_app = typer.Typer(help="Durable usage records (for chargeback).", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
drift_app = typer.Typer(help="Drift of live prompts from training data.", no_args_is_help=True)
app.add_typer(drift_app, name="drift")
blobs_app = typer.Typer(help="The blob store (files, adapters, snapshots).", no_args_is_help=True)
app.add_typer(blobs_app, name="blobs")
app.add_typer(webhooks_app, name="webhooks")
app.command("eval")(evaluate)
app.command("ask")(ask)
app.command("distill")(distill)

DEFAULT_PROJECT = "default"


def _prepared_database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    migrate.upgrade(database)
    return database


def _access(settings: Settings) -> AccessService:
    return AccessService(_prepared_database(settings))


register_model_transfer(models_app, _prepared_database)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Training workers to supervise (0: API only).")] = 1,
    api_workers: Annotated[
        int, typer.Option(min=1, help="API processes (more than 1: vLLM runs beside them).")
    ] = 1,
    vllm: Annotated[bool, typer.Option(help="Run a vLLM server per base model.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Start the API (and its training workers). The first start creates a project and its key."""
    settings = Settings()
    access = _access(settings)
    if not access.has_projects():
        issued = access.issue_key(DEFAULT_PROJECT, name="created by openft serve")
        err.print(f"Created project '{issued.project_slug}'. Its API key (shown only once):")
        print(issued.key, flush=True)
    configure_logging(log_level, settings.log_format)
    if not settings.base_models and (workers > 0 or vllm):
        _create_demo_model(settings)
    supervisor = Supervisor("worker", python_module_command("trainer.worker"), workers)
    supervisor.start()
    try:
        if api_workers == 1:
            app = create_app(settings, serve_models=vllm)
            uvicorn.run(
                app, host=host, port=port, log_level=log_level, log_config=None,
                access_log=settings.access_log,
            )  # fmt: skip
        else:
            _serve_api_processes(settings, host, port, api_workers, vllm, log_level)
    finally:
        supervisor.stop()


def _serve_api_processes(
    settings: Settings, host: str, port: int, count: int, vllm: bool, log_level: str
) -> None:
    """Several API processes on one port: vLLM children run here, metrics are shared by files."""
    metrics_dir = settings.data_dir / "run" / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters restart with the service
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_ENV] = str(metrics_dir)
    os.environ["OPENFT_LOG_LEVEL"] = log_level  # the API processes configure their own logging
    fleet = VLLMFleet(settings) if vllm else None
    if fleet is not None:
        fleet.start()
        os.environ["OPENFT_VLLM_URLS"] = json.dumps({**settings.vllm_urls, **fleet.urls()})
    try:
        uvicorn.run(
            "service.app:app_from_environment", factory=True, workers=count,
            host=host, port=port, log_level=log_level, log_config=None,
            access_log=settings.access_log,
        )  # fmt: skip
    finally:
        if fleet is not None:
            fleet.stop()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    api_workers: Annotated[int, typer.Option(min=1, help="API processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """The API and gateway only: jobs train in `openft worker` processes elsewhere and models
    are served by the vLLM servers at OPENFT_VLLM_URLS (containers, Kubernetes)."""
    serve(host=host, port=port, workers=0, api_workers=api_workers, vllm=False, log_level=log_level)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
) -> None:
    """Run one training worker in the foreground (needs the ML stack: `make install-ml`)."""
    command = python_module_command("trainer.worker", *(["--once"] if once else []))
    os.execv(command[0], command)


@models_app.command("create-demo")
def models_create_demo() -> None:
    """Build the demo base model (OPENFT_DEMO_MODEL_NAME) once; idempotent."""
    _create_demo_model(Settings())


def _create_demo_model(settings: Settings) -> None:
    target = settings.demo_model.path
    if settings.demo_model_name == SMOLLM2_MODEL_NAME:
        err.print(
            f"Preparing the demo base model '{SMOLLM2_MODEL_NAME}' (the first time: about a minute)"
        )
        downloads = settings.cache_dir / "downloads"
        command = python_module_command(
            "trainer.smollm2", "--output", target, "--cache", str(downloads)
        )
    else:
        command = python_module_command("trainer.demo_model", "--output", target)
    if subprocess.run(command, check=False).returncode != 0:
        err.print(
            "error: could not build the demo model (is the ML stack installed, and is a package "
            "index reachable for the first build? OPENFT_DEMO_MODEL_NAME=tiny-chat needs none)"
        )
        raise typer.Exit(1)
    err.print(f"Demo base model '{settings.demo_model.name}' is ready at {target}")


@keys_app.command("create")
def keys_create(
    project: Annotated[
        str | None, typer.Option(help="Project slug; created if it does not exist.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A note saying what the key is for.")] = None,
    admin: Annotated[
        bool,
        typer.Option(
            "--admin",
            help="An admin key instead: it calls the admin routes (checkpoint permissions) "
            "and no project's.",
        ),
    ] = False,
) -> None:
    """Create an API key and print it on a line of its own (it is stored only as a hash)."""
    if admin == (project is not None):
        err.print("Give either --project SLUG (a project key) or --admin (an admin key).")
        raise typer.Exit(2)
    with exit_on_error():
        if admin:
            issued_admin = _access(Settings()).issue_admin_key(name)
            err.print(f"Admin key {issued_admin.key_id}:")
            print(issued_admin.key, flush=True)
            return
        assert project is not None
        issued = _access(Settings()).issue_key(project, name)
    if issued.project_created:
        err.print(f"Created project '{issued.project_slug}' ({issued.project_id}).")
    err.print(f"API key {issued.key_id} for project '{issued.project_slug}':")
    print(issued.key, flush=True)


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
) -> None:
    """List API keys (redacted)."""
    table = Table("id", "project", "key", "name", "created", "revoked")
    for key in _access(Settings()).list_keys(project):
        table.add_row(
            key.key_id,
            key.project_slug,
            key.redacted,
            key.name or "",
            _when(key.created_at),
            _when(key.revoked_at),
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id, e.g. key_...")]) -> None:
    """Revoke an API key; requests with it fail from now on."""
    with exit_on_error():
        _access(Settings()).revoke_key(key_id)
    err.print(f"Revoked {key_id}.")


@keys_app.command("limits")
def keys_limits(
    key_id: Annotated[str, typer.Argument(help="The key id, e.g. key_...")],
    rpm: Annotated[
        int | None, typer.Option(min=0, help="Requests per minute (0: the default).")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option(min=0, help="Tokens per minute (0: the default).")
    ] = None,
) -> None:
    """Set one key's rate limits (OPENFT_RATE_LIMIT_* are the defaults for every key)."""
    with exit_on_error():
        _access(Settings()).set_key_limits(key_id, requests_per_minute=rpm, tokens_per_minute=tpm)
    err.print(f"Limits of {key_id} updated.")


@projects_app.command("limits")
def projects_limits(
    project: Annotated[str, typer.Argument(help="The project slug.")],
    max_active_jobs: Annotated[
        int | None, typer.Option(min=-1, help="Jobs not yet finished (-1: the default).")
    ] = None,
    storage_quota_bytes: Annotated[
        int | None, typer.Option(min=-1, help="Bytes of files stored (-1: the default).")
    ] = None,
) -> None:
    """Set one project's caps (OPENFT_MAX_ACTIVE_JOBS_PER_PROJECT and
    OPENFT_STORAGE_QUOTA_BYTES_PER_PROJECT are the defaults)."""
    with exit_on_error():
        _access(Settings()).set_project_limits(
            project, max_active_jobs=max_active_jobs, storage_quota_bytes=storage_quota_bytes
        )
    err.print(f"Limits of project '{project}' updated.")


@usage_app.command("report")
def usage_report(
    since: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD, UTC); default: 30 days ago.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Day after the last (YYYY-MM-DD, UTC).")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project (slug).")] = None,
    csv_output: Annotated[bool, typer.Option("--csv", help="CSV on standard output.")] = False,
) -> None:
    """Requests, tokens, training and cost per project and model, from the durable records."""
    settings = Settings()
    now = int(time.time())
    start = _day(since) if since else now - 30 * 86400
    end = _day(until) if until else now + 3600
    with _prepared_database(settings).read() as session:
        lines = usage.report(session, since=start, until=end, project=project)
    header = [
        "project", "model", "base_model", "requests", "prompt_tokens", "completion_tokens",
        "trained_tokens", "training_seconds", "cost_usd",
    ]  # fmt: skip
    rows = []
    for line in lines:
        cost = line.cost(settings.base_model(line.base_model))
        rows.append(
            [
                line.project,
                line.model,
                line.base_model,
                str(line.requests),
                str(line.prompt_tokens),
                str(line.completion_tokens),
                str(line.trained_tokens),
                f"{line.training_seconds:.1f}",
                "" if cost is None else f"{cost:.6f}",
            ]
        )
    if csv_output:
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@drift_app.command("report")
def drift_report(
    model: Annotated[str, typer.Argument(help="A fine-tuned model (ft:...).")],
    base_url: Annotated[
        str, typer.Option(envvar="OPENFT_BASE_URL", help="The API's base URL, ending in /v1.")
    ] = "http://127.0.0.1:8000/v1",
    metrics_token: Annotated[
        str, typer.Option(envvar="OPENFT_METRICS_TOKEN", help="The operators' metrics token.")
    ] = "",
    prometheus_url: Annotated[
        str | None, typer.Option(help="Read the last hour from this Prometheus instead.")
    ] = None,
) -> None:
    """How far a model's live prompts are from its training data, and what it means."""
    try:
        if prometheus_url:
            figures = drift_report_module.from_prometheus(prometheus_url, model)
        else:
            root = base_url.rstrip("/").removesuffix("/v1")
            response = httpx.get(
                f"{root}/metrics",
                headers={"authorization": f"Bearer {metrics_token}"},
                timeout=10,
            )
            response.raise_for_status()
            figures = drift_report_module.from_metrics(response.text, model)
    except httpx.HTTPError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    psi_text = "-" if figures.psi is None else f"{figures.psi:.3f}"
    outside = "-" if figures.outside_share is None else f"{figures.outside_share:.1%}"
    print(f"model: {figures.model}  (from {figures.source})")
    print(f"prompts: {figures.prompts}  PSI: {psi_text}  outside the training range: {outside}")
    if figures.token_distance is not None:
        print(f"token distance (Jensen-Shannon): {figures.token_distance:.3f}")
    print(figures.verdict())


def _day(text: str) -> int:
    try:
        return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    except ValueError as exc:
        err.print(f"error: {text!r} is not a date like 2026-11-26")
        raise typer.Exit(2) from exc


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Print the API's OpenAPI document (checked in as openapi/openapi.json)."""
    from service.openapi import render

    document = render()
    if output is None:
        sys.stdout.write(document)
    else:
        output.write_text(document)


@blobs_app.command("copy")
def blobs_copy(
    to: Annotated[
        str | None, typer.Option("--to", help="Back up into this s3://bucket/prefix or folder.")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Restore from this s3://bucket/prefix or folder.")
    ] = None,
) -> None:
    """Copy every blob out of the configured store (--to) or into it (--from).

    Blobs already there with the same size are skipped, so a copy can be run again after an
    interruption. Back up the database at the same time (README, Operations).
    """
    if (to is None) == (from_ is None):
        err.print("error: give exactly one of --to and --from")
        raise typer.Exit(2)
    settings = Settings()
    configured = open_blob_store(settings)
    other = open_blob_location(to or from_ or "", settings)
    source, target = (configured, other) if to else (other, configured)
    blobs, size = copy_blobs(source, target)
    err.print(f"Copied {blobs} blobs ({size:,} bytes) {'to' if to else 'from'} {to or from_}.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    _prepared_database(Settings())
    err.print("Database schema is up to date.")


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def main() -> None:
    app()
