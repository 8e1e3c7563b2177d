"""``openft jobs``: fine-tuning jobs from the terminal, through the HTTP API like any client.

``follow`` shows a job until it ends: its events as they arrive and, while it trains, a progress
bar (step/total, loss, time left). Base URL and key come from options or ``OPENFT_BASE_URL`` and
``OPENFT_API_KEY`` (or ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

jobs_app = typer.Typer(help="Fine-tuning jobs, through the API.", no_args_is_help=True)
TERMINAL = ("succeeded", "failed", "cancelled")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # long messages stay on one line in logs

BaseUrl = Annotated[
    str, typer.Option(envvar="OPENFT_BASE_URL", help="The API's base URL, ending in /v1.")
]
ApiKey = Annotated[
    str,
    typer.Option(envvar=["OPENFT_API_KEY", "OPENAI_API_KEY"], help="An API key (sk-openft-...)."),
]
JobId = Annotated[str, typer.Argument(help="The job id, ftjob-...")]
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class ApiError(Exception):
    pass


class Api:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )

    def call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiError(f"{response.status_code}: {message}")
        body: dict[str, Any] = response.json()
        return body


def client_for(base_url: str, key: str) -> Api:
    if not key:
        err.print("error: no API key; pass --api-key or set OPENFT_API_KEY")
        raise typer.Exit(2)
    return Api(base_url, key)


def or_exit(action: Any) -> Any:
    try:
        return action()
    except ApiError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc


@jobs_app.command("create")
def create(
    training_file: Annotated[str, typer.Argument(help="A file id, or a local JSONL to upload.")],
    model: Annotated[
        str | None, typer.Option(help="Base model to fine-tune (default: the server's only one).")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name.")] = None,
    epochs: Annotated[int | None, typer.Option(help="n_epochs (default: auto).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch_size (default: auto).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, for a reproducible run.")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            help="Follow the job until it ends; stdout is then the fine-tuned model's name only."
        ),
    ] = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """Create a fine-tuning job (uploading the training file first if it is a path) and print
    its id, or with ``--follow`` the fine-tuned model's name: ``MODEL=$(openft jobs create ...
    --follow)``."""
    api = client_for(base_url, api_key)
    path = Path(training_file)
    if path.is_file():
        with path.open("rb") as handle:
            uploaded = or_exit(
                lambda: api.call(
                    "POST", "/files", data={"purpose": "fine-tune"}, files={"file": handle}
                )
            )
        err.print(f"Uploaded {path.name} as {uploaded['id']}")
        training_file = uploaded["id"]
    hyperparameters = {
        k: v for k, v in (("n_epochs", epochs), ("batch_size", batch_size)) if v is not None
    }
    body: dict[str, Any] = {"model": model or _only_base_model(api), "training_file": training_file}
    body.update({k: v for k, v in (("suffix", suffix), ("seed", seed)) if v is not None})
    if hyperparameters:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    job = or_exit(lambda: api.call("POST", "/fine_tuning/jobs", json=body))
    if not follow:
        print(job["id"], flush=True)
        return
    err.print(f"Created {job['id']}")
    _follow(api, job["id"])


def _only_base_model(api: Api) -> str:
    """The server's base model, when it serves one (as ``make run`` does)."""
    models = or_exit(lambda: api.call("GET", "/models"))["data"]
    bases = [m["id"] for m in models if not m["id"].startswith("ft:")]
    if len(bases) != 1:
        err.print(f"error: pass --model; the server's base models are: {', '.join(bases)}")
        raise typer.Exit(2)
    return str(bases[0])


@jobs_app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """List the project's jobs, newest first."""
    api = client_for(base_url, api_key)
    page = or_exit(lambda: api.call("GET", "/fine_tuning/jobs", params={"limit": limit}))
    table = Table("id", "status", "model", "fine-tuned model", "created")
    for job in page["data"]:
        table.add_row(
            job["id"], job["status"], job["model"], job["fine_tuned_model"] or "", _when(job)
        )
    out.print(table)


@jobs_app.command("show")
def show(job_id: JobId, base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = "") -> None:
    """Print a job as the API returns it (JSON)."""
    api = client_for(base_url, api_key)
    print(json.dumps(or_exit(lambda: api.call("GET", f"/fine_tuning/jobs/{job_id}")), indent=2))


@jobs_app.command("cancel")
def cancel(job_id: JobId, base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = "") -> None:
    """Cancel a job."""
    api = client_for(base_url, api_key)
    job = or_exit(lambda: api.call("POST", f"/fine_tuning/jobs/{job_id}/cancel"))
    err.print(f"{job['id']} is {job['status']}")


@jobs_app.command("follow")
def follow(
    job_id: JobId,
    poll_seconds: Annotated[float, typer.Option(help="How often to ask.")] = 1.0,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """Show a job's events and progress until it ends; exit 0 only if it succeeded."""
    _follow(client_for(base_url, api_key), job_id, poll_seconds)


@dataclass
class _Seen:
    ids: set[str] = field(default_factory=set)
    step: int = 0
    total: int = 0
    figure: str = "-"  # "loss 0.523", or an RFT job's "reward 0.42 (valid 0.68)"
    valid_reward: float | None = None


def _follow(api: Api, job_id: str, poll_seconds: float = 1.0) -> None:
    seen = _Seen()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[figure]}"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    task = progress.add_task("training", total=None, figure="")
    with progress:
        while True:
            job = or_exit(lambda: api.call("GET", f"/fine_tuning/jobs/{job_id}"))
            events = or_exit(
                lambda: api.call("GET", f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
            )
            for event in reversed(events["data"]):
                if event["id"] not in seen.ids:
                    seen.ids.add(event["id"])
                    _show_event(progress, event, seen)
            progress.update(task, completed=seen.step, total=seen.total or None, figure=seen.figure)
            if job["status"] in TERMINAL:
                break
            time.sleep(poll_seconds)
    _finish(job)


def _show_event(progress: Progress, event: dict[str, Any], seen: _Seen) -> None:
    data = event.get("data") or {}
    if event["type"] == "metrics" and "step" in data:
        seen.step, seen.total = int(data["step"]), int(data.get("total_steps", 0))
        seen.figure = _figure(data, seen)
        # Without a terminal there is no bar: a line per tenth of the job instead.
        tenth = max(1, seen.total // 10)
        if not err.is_terminal and (seen.step % tenth == 0 or seen.step == seen.total):
            err.print(f"step {seen.step}/{seen.total} {seen.figure}")
        return
    progress.console.print(f"{_clock(event['created_at'])} {event['message']}")


def _figure(data: dict[str, Any], seen: _Seen) -> str:
    """What a step's progress shows: the training loss, or an RFT job's mean rewards."""
    if "train_mean_reward" not in data:
        loss = data.get("train_loss")
        return "loss -" if loss is None else f"loss {loss:.3f}"
    if data.get("full_valid_mean_reward") is not None:
        seen.valid_reward = data["full_valid_mean_reward"]
    valid = "" if seen.valid_reward is None else f" (valid {seen.valid_reward:.2f})"
    return f"reward {data['train_mean_reward']:.2f}{valid}"


def _finish(job: dict[str, Any]) -> None:
    if job["status"] == "succeeded":
        err.print(f"{job['id']} succeeded: {job['fine_tuned_model']}")
        print(job["fine_tuned_model"], flush=True)
        return
    error = job.get("error") or {}
    detail = f" ({error.get('code')}: {error.get('message')})" if error.get("code") else ""
    err.print(f"{job['id']} {job['status']}{detail}")
    raise typer.Exit(1)


def _clock(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")


def _when(job: dict[str, Any]) -> str:
    return datetime.fromtimestamp(job["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
