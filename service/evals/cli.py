"""``openft eval``: the before/after report, through the HTTP API like any client.

Prints the summary table and writes ``report.json`` (the API's answer), ``report.png`` (base vs
fine-tuned per metric) and ``report.html`` (the table, the chart embedded, every example).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from service.console import err
from service.evals import chart
from service.evals.schemas import DEFAULT_EXAMPLES, MAX_EXAMPLES
from service.jobs.cli import DEFAULT_BASE_URL, Api, ApiError, ApiKey, BaseUrl

# The call is synchronous: up to MAX_EXAMPLES examples, two greedy answers each.
EVAL_TIMEOUT = httpx.Timeout(3600.0, connect=5.0)
out = Console()


def evaluate(
    model: Annotated[str, typer.Argument(help="A fine-tuned model (ft:...).")],
    file: Annotated[
        str, typer.Option("--file", help="A chat JSONL file id, or a local file to upload.")
    ],
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_EXAMPLES, help="Evaluate the first N examples.")
    ] = DEFAULT_EXAMPLES,
    max_tokens: Annotated[
        int | None, typer.Option(help="Tokens per answer (default: the reference's length + 16).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.*")] = Path("."),
    grader: Annotated[
        Path | None,
        typer.Option(
            "--grader",
            help="A JSON file holding one of OpenAI's graders (as an RFT job's): both models' "
            "answers are also scored by it.",
        ),
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """Compare a fine-tuned model with its base on held-out examples: exact match, token F1,
    ROUGE-L against each example's last assistant message, and, with --grader, the grader's
    mean reward (then reinforcement prompts without a reference answer count too)."""
    if not api_key:
        err.print("error: no API key; pass --api-key or set OPENFT_API_KEY")
        raise typer.Exit(2)
    api = Api(base_url, api_key)
    try:
        file_id = _uploaded(api, Path(file)) if Path(file).is_file() else file
        body: dict[str, Any] = {"model": model, "file": file_id, "limit": limit}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if grader is not None:
            body["grader"] = _grader(grader)
        report = api.call("POST", "/openft/evals", json=body, timeout=EVAL_TIMEOUT)
    except ApiError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    out.print(summary_table(report))
    written = write_report(report, out_dir)
    err.print(f"Wrote {', '.join(str(p) for p in written)}")


def _grader(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"error: --grader {path}: {exc}")
        raise typer.Exit(2) from exc


def _uploaded(api: Api, path: Path) -> str:
    with path.open("rb") as handle:
        uploaded = api.call("POST", "/files", data={"purpose": "evals"}, files={"file": handle})
    err.print(f"Uploaded {path.name} as {uploaded['id']}")
    return str(uploaded["id"])


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(
        "metric",
        "base",
        "fine-tuned",
        "change",
        "wins / ties / losses",
        title=f"{report['model']} vs {report['base_model']}",
        caption=f"{report['examples']} examples scored, {report['failed']} failed, "
        f"{report['skipped']} lines skipped",
    )
    for m in report["metrics"]:
        colour = "green" if m["delta"] > 0 else "red" if m["delta"] < 0 else ""
        table.add_row(
            chart.LABELS[m["metric"]],
            f"{m['base']:.3f}",
            f"{m['fine_tuned']:.3f}",
            f"[{colour}]{m['delta']:+.3f}[/]" if colour else f"{m['delta']:+.3f}",
            f"{m['wins']} / {m['ties']} / {m['losses']}",
        )
    return table


def write_report(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    png = chart.bar_chart(report)
    files = {
        "report.json": json.dumps(report, indent=2, ensure_ascii=False).encode(),
        "report.png": png,
        "report.html": chart.html_page(report, png).encode(),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in files]
