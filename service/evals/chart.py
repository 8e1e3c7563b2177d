"""The report for people: a grouped bar chart (PNG, matplotlib) and a self-contained HTML page.

Only the ``openft eval`` command renders; matplotlib is imported inside ``bar_chart`` so that
importing this module (the CLI imports it) never loads matplotlib into the API process.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

LABELS = {
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "grader": "Grader",
}
BASE_COLOUR, TUNED_COLOUR = "#9aa5b1", "#2b6cb0"


def bar_chart(report: dict[str, Any]) -> bytes:
    """PNG: per metric, the base model's mean next to the fine-tuned model's."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    from matplotlib.figure import Figure

    metrics = report["metrics"]
    names = [LABELS[m["metric"]] for m in metrics]
    positions = range(len(metrics))
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    width = 0.38
    for offset, key, colour, label in (
        (-width / 2, "base", BASE_COLOUR, f"base: {report['base_model']}"),
        (width / 2, "fine_tuned", TUNED_COLOUR, "fine-tuned"),
    ):
        values = [m[key] for m in metrics]
        bars = axes.bar([p + offset for p in positions], values, width, label=label, color=colour)
        axes.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=2, fontsize=8)
    axes.set_xticks(list(positions), names)
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("mean score (0-1)")
    count = report["examples"]
    figure.suptitle(f"{count} example{'s' * (count != 1)} from {report['file']}", fontsize=9)
    # Above the bars, never over them (a perfect score reaches the top).
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def html_page(report: dict[str, Any], png: bytes) -> str:
    """One file, nothing to fetch: the summary table, the chart as a data: URI, the rows."""
    esc = html.escape
    image = base64.b64encode(png).decode()
    summary = "".join(
        f"<tr><td>{esc(LABELS[m['metric']])}</td><td>{m['base']:.3f}</td>"
        f"<td>{m['fine_tuned']:.3f}</td><td>{m['delta']:+.3f}</td>"
        f"<td>{m['wins']} / {m['ties']} / {m['losses']}</td></tr>"
        for m in report["metrics"]
    )
    rows = "".join(_row(r) for r in report["rows"])
    title = f"{report['model']} vs {report['base_model']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1a202c; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #cbd5e0; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #edf2f7; }} td.num {{ text-align: right; }}
.rows td {{ font-size: .85rem; max-width: 28rem; white-space: pre-wrap; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>File {esc(report["file"])}: {report["examples"]} examples scored, {report["failed"]} failed,
{report["skipped"]} lines skipped. Scores are means over the examples (1 is best); wins / ties /
losses count the examples where the fine-tuned model scored higher / the same / lower.</p>
<table class="summary"><tr><th>metric</th><th>base</th><th>fine-tuned</th><th>change</th>
<th>wins / ties / losses</th></tr>{summary}</table>
<img alt="base vs fine-tuned per metric" src="data:image/png;base64,{image}">
<h2>Examples</h2>
<table class="rows"><tr><th>#</th><th>prompt</th><th>reference</th><th>base</th>
<th>fine-tuned</th></tr>{rows}</table>
</body></html>
"""


def _row(row: dict[str, Any]) -> str:
    esc = html.escape
    cells = [str(row["example"]), row["prompt"], row["reference"] or "(graded)"]
    cells += [_answer(row[side]) for side in ("base", "fine_tuned")]
    return "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def _answer(answer: dict[str, Any]) -> str:
    if answer["text"] is None:
        return f"(failed: {answer['error']})"
    scores = []
    if answer["token_f1"] is not None:
        scores.append(f"F1 {answer['token_f1']:.2f}, ROUGE-L {answer['rouge_l']:.2f}")
    if answer.get("grader") is not None:
        scores.append(f"grader {answer['grader']:.2f}")
    return f"{answer['text']}\n[{'; '.join(scores)}]"
