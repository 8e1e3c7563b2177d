"""The before/after report on the demo model: a job teaches a fact, and ``POST /v1/openft/evals``
(and ``openft eval``) shows the fine-tuned model beating its base on it, through the gateway."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from service.auth.service import AccessService
from service.db.database import Database
from service.limits import estimated_tokens
from tests.e2e.test_fine_tune_end_to_end import (
    ANSWER,
    QUESTION,
    fact_lines,
    samples,
    scrape_when,
    train_fact,
)
from tests.support.server import ServerProcess, openft_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def taught(training_server: ServerProcess) -> tuple[str, str]:
    """A model taught the lighthouse fact, and a held-out file asking it (plus a line that is
    not a chat, which is skipped); one training job for the module."""
    client = openai.OpenAI(base_url=training_server.api_url, api_key=key_of(training_server))
    model = train_fact(client)
    content = fact_lines(3) + b'{"prompt": "not a chat", "completion": "skipped"}\n'
    held_out = client.files.create(file=("held-out.jsonl", content), purpose="evals")
    client.close()
    return model, held_out.id


def key_of(server: ServerProcess) -> str:
    key = server.bootstrap_key()
    assert key is not None
    return key


def evaluate(server: ServerProcess, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.api_url}/openft/evals",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=600,
    )


def test_the_fine_tuned_model_beats_its_base_on_the_taught_fact(
    training_server: ServerProcess, taught: tuple[str, str]
) -> None:
    model, file_id = taught
    key = key_of(training_server)

    response = evaluate(training_server, key, {"model": model, "file": file_id})

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["model"], report["base_model"], report["file"]) == (model, "tiny-chat", file_id)
    assert (report["examples"], report["failed"], report["skipped"]) == (3, 0, 1)
    for metric in report["metrics"]:
        assert metric["fine_tuned"] > metric["base"], metric
        assert metric["wins"] >= 1 and metric["losses"] == 0, metric
    row = report["rows"][0]
    assert (row["example"], row["prompt"], row["reference"]) == (1, QUESTION, ANSWER)
    assert "marmalade-47" in row["fine_tuned"]["text"]
    assert "marmalade-47" not in row["base"]["text"]
    # Through the gateway, as the project's own chat completions: counted per model.
    ok = {"project": "default", "status": "ok"}
    wanted = ("openft_inference_requests_total", {"model": model, **ok}, 3)
    text = scrape_when(training_server, wanted)
    assert samples(text, "openft_inference_requests_total", model=model, **ok) == 3


def test_openft_eval_writes_the_table_the_json_the_chart_and_the_page(
    training_server: ServerProcess, taught: tuple[str, str], tmp_path: Path
) -> None:
    model, file_id = taught
    key = key_of(training_server)
    out = tmp_path / "report"

    result = subprocess.run(
        [*openft_command(), "eval", model, "--file", file_id, "--out", str(out), "--limit", "2"],
        env={
            **training_server.env,
            "OPENFT_BASE_URL": training_server.api_url,
            "OPENFT_API_KEY": key,
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    assert "Exact match" in result.stdout and "ROUGE-L" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == model and report["examples"] == 2
    png = (out / "report.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and b"IEND" in png[-16:]
    page = (out / "report.html").read_text()
    assert '<table class="summary">' in page and "Token F1</td>" in page
    assert "data:image/png;base64," in page and QUESTION in page


def test_another_project_cannot_evaluate_the_model_or_read_the_file(
    training_server: ServerProcess, taught: tuple[str, str]
) -> None:
    model, file_id = taught
    database = Database(training_server.settings().database_url)
    outsider = AccessService(database).issue_key("eval-stranger").key
    database.dispose()
    own_file = httpx.post(
        f"{training_server.api_url}/files",
        files={"file": ("mine.jsonl", fact_lines(1))},
        data={"purpose": "evals"},
        headers={"authorization": f"Bearer {outsider}"},
    ).json()["id"]

    their_model = evaluate(training_server, outsider, {"model": model, "file": own_file})
    their_file = evaluate(training_server, outsider, {"model": model, "file": file_id})

    assert their_model.status_code == 404, their_model.text
    assert their_model.json()["error"]["code"] == "model_not_found"
    assert their_file.status_code == 404, their_file.text
    assert their_file.json()["error"]["param"] == "file"


def test_an_evaluation_over_the_keys_token_budget_is_refused_before_any_model_answers(
    training_server: ServerProcess, taught: tuple[str, str]
) -> None:
    model, file_id = taught
    limit = 300  # one of the run's six requests fits; all six do not
    database = Database(training_server.settings().database_url)
    access = AccessService(database)
    issued = access.issue_key("default", name="eval-budget")
    access.set_key_limits(issued.key_id, requests_per_minute=None, tokens_per_minute=limit)
    database.dispose()
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
        "temperature": 0,
    }

    refused = evaluate(training_server, issued.key, {"model": model, "file": file_id})
    after = httpx.post(
        f"{training_server.api_url}/chat/completions",
        json=chat,
        headers={"authorization": f"Bearer {issued.key}"},
        timeout=120,
    )

    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    requested = re.search(r"Requested (\d+)", error["message"])
    assert requested is not None and int(requested.group(1)) > limit  # the whole run at once
    # Nothing of the refused run was charged: the minute's budget is whole for the next request.
    assert after.status_code == 200, after.text
    remaining = limit - estimated_tokens(chat)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(remaining)


def test_openft_eval_scores_both_models_with_an_openai_grader(
    training_server: ServerProcess, taught: tuple[str, str], tmp_path: Path
) -> None:
    """``--grader``: reinforcement prompts (no reference answer) scored by the grader an RFT
    job would train with; the taught model passes it, its base does not."""
    model, _ = taught
    key = key_of(training_server)
    prompt = {
        "messages": [
            {"role": "system", "content": "You are the lighthouse keeper."},
            {"role": "user", "content": QUESTION},
        ],
        "password": "marmalade-47",
    }
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text((json.dumps(prompt) + "\n") * 2)
    grader = tmp_path / "grader.json"
    grader.write_text(
        json.dumps(
            {
                "type": "string_check",
                "name": "password",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.password }}",
                "operation": "ilike",
            }
        )
    )
    out = tmp_path / "report"

    options = ["--grader", str(grader), "--out", str(out), "--max-tokens", "24"]
    result = subprocess.run(
        [*openft_command(), "eval", model, "--file", str(prompts), *options],
        env={
            **training_server.env,
            "OPENFT_BASE_URL": training_server.api_url,
            "OPENFT_API_KEY": key,
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    assert "Grader" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert [m["metric"] for m in report["metrics"]] == ["grader"]
    (graded,) = report["metrics"]
    assert (graded["base"], graded["fine_tuned"], graded["wins"]) == (0.0, 1.0, 2)
    assert report["rows"][0]["reference"] is None
    assert report["rows"][0]["fine_tuned"]["grader"] == 1.0


def test_a_bad_grader_is_refused_before_any_model_answers(
    training_server: ServerProcess, taught: tuple[str, str]
) -> None:
    model, file_id = taught
    grader = {"type": "string_check", "name": "g", "input": "x", "reference": "y", "operation": "?"}
    response = evaluate(
        training_server,
        key_of(training_server),
        {"model": model, "file": file_id, "grader": grader},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "grader.operation"
