"""What ``openft eval`` writes for people: a PNG chart and a self-contained HTML page."""

from __future__ import annotations

import json
from pathlib import Path

from service.evals import chart
from service.evals.cli import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REPORT = {
    "model": "ft:tiny-chat:p:s:abcdefgh",
    "base_model": "tiny-chat",
    "file": "file-x",
    "examples": 1,
    "failed": 0,
    "skipped": 0,
    "metrics": [
        {
            "metric": m,
            "base": 0.25,
            "fine_tuned": 1.0,
            "delta": 0.75,
            "wins": 1,
            "ties": 0,
            "losses": 0,
        }
        for m in ("exact_match", "token_f1", "rouge_l")
    ],
    "rows": [
        {
            "example": 1,
            "prompt": "What is <b>?",
            "reference": "bold",
            "base": {
                "text": "no",
                "error": None,
                "exact_match": 0.0,
                "token_f1": 0.0,
                "rouge_l": 0.0,
            },
            "fine_tuned": {
                "text": "bold",
                "error": None,
                "exact_match": 1.0,
                "token_f1": 1.0,
                "rouge_l": 1.0,
            },
        }
    ],
}


def test_the_chart_is_a_png_and_the_page_embeds_it_with_the_table() -> None:
    png = chart.bar_chart(REPORT)
    page = chart.html_page(REPORT, png)

    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    assert "data:image/png;base64," in page and "Exact match</td><td>0.250</td>" in page
    assert "What is &lt;b&gt;?" in page  # the file's text is escaped


def test_the_report_files_are_written_into_the_folder(tmp_path: Path) -> None:
    written = write_report(REPORT, tmp_path / "out")

    assert sorted(p.name for p in written) == ["report.html", "report.json", "report.png"]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == REPORT
    assert (tmp_path / "out" / "report.png").read_bytes().startswith(PNG_SIGNATURE)
