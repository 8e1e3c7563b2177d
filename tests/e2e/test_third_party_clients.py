"""Real clients of the Responses API against ``ft:`` models trained here: the OpenAI Agents SDK
(``OpenAIResponsesModel``, its default; tracing off), LangChain's ``ChatOpenAI`` with
``use_responses_api=True``, and the official Node SDK (plain, streamed, chained). Each runs as its
users run it, in its own environment (``make clients``: ``.venv-clients``, ``tests/clients/node``)
from the scripts in ``tests/clients/``; what they print is checked here.

Runs on the training server of ``test_fine_tune_end_to_end.py`` (the same session fixtures).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.test_fine_tune_end_to_end import TERMINAL, fact_lines, tool_call_lines, wait_for
from tests.support.ci import require
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "clients"
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
PASSWORD = "marmalade-47"


@pytest.fixture(scope="module")
def models(training_server: ServerProcess) -> Iterator[dict[str, str]]:
    """A model that learnt the lighthouse's password, and one that learnt to call get_weather."""
    key = training_server.bootstrap_key()
    assert key is not None
    with openai.OpenAI(base_url=training_server.api_url, api_key=key, max_retries=0) as client:
        found = {}
        for name, lines in (("fact", fact_lines()), ("tools", tool_call_lines())):
            training = client.files.create(file=("train.jsonl", lines), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
            done = wait_for(client, job.id, TERMINAL)
            assert done.status == "succeeded" and done.fine_tuned_model, done.error
            found[name] = done.fine_tuned_model
        yield found


def run_client(training_server: ServerProcess, *command: str) -> dict[str, Any]:
    key = training_server.bootstrap_key()
    assert key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPENFT_"))}
    env |= {"OPENFT_BASE_URL": training_server.api_url, "OPENFT_API_KEY": key}
    env["OPENAI_API_KEY"] = "sk-never-sent-to-openai"  # a client that reads it finds a dud
    done = subprocess.run(
        list(command), env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{training_server.logs()}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def python_client() -> str:
    require(CLIENTS_PYTHON.exists(), "the clients' virtual environment (make clients)")
    return str(CLIENTS_PYTHON)


def test_the_agents_sdk_runs_an_agent_and_a_tool_on_fine_tuned_models(
    training_server: ServerProcess, models: dict[str, str], trainer_client: openai.OpenAI
) -> None:
    script = str(CLIENTS / "agents_client.py")
    result = run_client(training_server, python_client(), script, models["fact"], models["tools"])

    assert PASSWORD in result["answer"]
    (response_id,) = result["response_ids"]
    assert trainer_client.responses.retrieve(response_id).output_text == result["answer"]
    assert result["tool_calls"] == ["Paris"]  # the model called get_weather, the SDK ran it
    assert result["tool_output"] == "Sunny in Paris."


def test_langchain_chat_openai_with_the_responses_api_invokes_and_streams(
    training_server: ServerProcess, models: dict[str, str]
) -> None:
    script = str(CLIENTS / "langchain_client.py")
    result = run_client(training_server, python_client(), script, models["fact"])

    assert PASSWORD in result["answer"] and result["streamed"] == result["answer"]
    assert result["response_id"].startswith("resp_")
    usage = result["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


def test_the_node_sdk_creates_streams_and_chains_responses(
    training_server: ServerProcess, models: dict[str, str]
) -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require((CLIENTS / "node" / "node_modules" / "openai").exists(), "the Node SDK (make clients)")
    assert node is not None
    result = run_client(
        training_server, node, str(CLIENTS / "node" / "responses.mjs"), models["fact"]
    )

    assert result["id"].startswith("resp_") and result["status"] == "completed"
    assert PASSWORD in result["text"] and result["streamed"] == result["text"]
    events = result["events"]
    assert events[:2] == ["response.created", "response.in_progress"]
    assert events[-1] == "response.completed" and "response.output_text.delta" in events
    assert result["chained_previous"] == result["id"]
