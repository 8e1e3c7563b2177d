"""OpenAI's graders through the official SDK: ``fine_tuning.alpha.graders.validate`` and ``.run``
for every grader type with exact rewards, OpenAI's 400s for bad graders, python graders that
attack the sandbox, and a ``score_model`` grader judged by the locally served demo model."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from service.auth.service import AccessService
from service.db.database import Database
from tests.support.server import ServerProcess, start_server

SANDBOX_TIMEOUT_S = 4
JUDGE_MAPPING = '{"o4-mini": "tiny-chat"}'


@pytest.fixture(scope="module")
def graders_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The API alone, with short python-grader limits and OpenAI's o4-mini mapped to a local
    model (it validates; judging needs vLLM, which the training server runs)."""
    process = start_server(
        tmp_path_factory.mktemp("serve-graders"),
        {
            "OPENFT_GRADER_PYTHON_TIMEOUT_SECONDS": str(SANDBOX_TIMEOUT_S),
            "OPENFT_GRADER_MODELS": JUDGE_MAPPING,
        },
        "--workers",
        "0",
        "--no-vllm",
    )
    yield process
    process.stop()


@pytest.fixture
def client(graders_server: ServerProcess, sdk: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    database = Database(graders_server.settings().database_url)
    key = AccessService(database).issue_key(f"graders-{time.monotonic_ns()}").key
    database.dispose()
    return sdk(graders_server.api_url, key)


def string_check(operation: str = "eq", **extra: Any) -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": "exact",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": operation,
        **extra,
    }


def similarity(metric: str) -> dict[str, Any]:
    return {
        "type": "text_similarity",
        "name": metric,
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": metric,
    }


PYTHON_SCORE = """
def grade(sample, item):
    return len(sample["output_text"]) / item["scale"]
"""


def python(source: str, name: str = "py") -> dict[str, Any]:
    return {"type": "python", "name": name, "source": source, "image_tag": "2025-05-08"}


def test_validate_echoes_every_kind_of_grader(client: openai.OpenAI) -> None:
    graders = [
        string_check(),
        similarity("rouge_l"),
        python(PYTHON_SCORE),
        {
            "type": "score_model",
            "name": "judge",
            "model": "o4-mini",
            "input": [{"role": "user", "content": "Score {{ sample.output_text }}"}],
            "range": [0, 10],
            "sampling_params": {"temperature": 0, "max_completions_tokens": 50},
        },
        {
            "type": "multi",
            "name": "both",
            "graders": {"exact": string_check(), "py": python(PYTHON_SCORE)},
            "calculate_output": "0.5 * exact + 0.5 * py",
        },
    ]
    for grader in graders:
        raw = client.fine_tuning.alpha.graders.with_raw_response.validate(grader=grader)  # type: ignore[arg-type]
        assert raw.http_response.json() == {"grader": grader}


@pytest.mark.parametrize(
    ("grader", "param", "words"),
    [
        (string_check("neq"), "grader.operation", "'eq', 'ne', 'like' or 'ilike'"),
        (
            {**string_check(), "reference": "{{ items.answer }}"},
            "grader.reference",
            "not a template variable",
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "o4-mini",
                "input": [{"role": "user", "content": "x"}],
                "labels": ["a"],
                "passing_labels": ["a"],
            },
            "grader.type",
            "only inside a multi grader",
        ),
        (
            {
                "type": "score_model",
                "name": "judge",
                "model": "gpt-5-nano",
                "input": [{"role": "user", "content": "x"}],
            },
            "grader.model",
            "'gpt-5-nano' is not served here",
        ),
        (similarity("cosine"), "grader.evaluation_metric", "needs an embedding model"),
        (python("def grade(sample):\n    return 1.0\n"), "grader.source", "two"),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {"exact": string_check()},
                "calculate_output": "0.5 * exact + 0.5 * missing)",
            },
            "grader.calculate_output",
            "'missing' is not a grader",
        ),
    ],
)
def test_bad_graders_are_openais_400_naming_the_field(
    client: openai.OpenAI, grader: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("grader", "sample", "item", "reward"),
    [
        (string_check("eq"), "Paris", {"answer": "Paris"}, 1.0),
        (string_check("eq"), "paris", {"answer": "Paris"}, 0.0),
        (string_check("ne"), "Lyon", {"answer": "Paris"}, 1.0),
        (string_check("like"), "It is Paris.", {"answer": "Paris"}, 1.0),
        (string_check("ilike"), "IT IS PARIS", {"answer": "Paris"}, 1.0),
        (similarity("fuzzy_match"), "Paris", {"answer": "paris"}, 1.0),
        (similarity("bleu"), "the cat sat on the mat", {"answer": "the cat sat on the mat"}, 1.0),
        # ROUGE-1 F: precision 3/3, recall 3/6, F = 2PR / (P + R) = 2/3.
        (similarity("rouge_1"), "the cat sat", {"answer": "the cat sat on the mat"}, 2 / 3),
        (similarity("meteor"), "a b c", {"answer": "x y z"}, 0.0),
        (python(PYTHON_SCORE), "abcde", {"scale": 10}, 0.5),
        (
            string_check("eq", input="{{ sample.output_json.city }}", reference="Oslo"),
            '{"city": "Oslo"}',
            {},
            1.0,
        ),
    ],
)
def test_run_gives_openais_reward(
    client: openai.OpenAI, grader: dict[str, Any], sample: str, item: dict[str, Any], reward: float
) -> None:
    ran = client.fine_tuning.alpha.graders.run(grader=grader, model_sample=sample, item=item)  # type: ignore[arg-type]
    assert ran.reward == pytest.approx(reward)
    assert ran.metadata.name == grader["name"]
    assert ran.metadata.type == grader["type"]
    assert not any(v for v in ran.metadata.errors.model_dump().values())
    assert ran.metadata.execution_time > 0
    assert ran.metadata.token_usage is None
    assert ran.sub_rewards == {} and ran.model_grader_token_usage_per_model == {}


def test_multi_reports_sub_rewards_by_key(client: openai.OpenAI) -> None:
    grader = {
        "type": "multi",
        "name": "both",
        "graders": {"exact": string_check(), "length": python(PYTHON_SCORE, "length")},
        "calculate_output": "0.25 * exact + 0.75 * min(length, 1)",
    }
    ran = client.fine_tuning.alpha.graders.run(
        grader=grader,  # type: ignore[arg-type]
        model_sample="Paris",
        item={"answer": "Paris", "scale": 20},
    )
    assert ran.sub_rewards == {"exact": 1.0, "length": 0.25}
    assert ran.reward == pytest.approx(0.25 + 0.75 * 0.25)
    assert ran.metadata.scores == {"exact": 1.0, "length": 0.25}


def test_a_grader_that_cannot_read_its_item_scores_zero_and_says_why(
    client: openai.OpenAI,
) -> None:
    ran = client.fine_tuning.alpha.graders.run(
        grader=string_check(),  # type: ignore[arg-type]
        model_sample="Paris",
        item={"label": "Paris"},
    )
    assert ran.reward == 0.0
    assert ran.metadata.errors.invalid_variable_error is True
    raised = client.fine_tuning.alpha.graders.run(
        grader=python("def grade(sample, item):\n    raise ValueError('no label here')\n"),  # type: ignore[arg-type]
        model_sample="x",
    )
    assert raised.reward == 0.0
    assert raised.metadata.errors.python_grader_runtime_error is True
    assert "no label here" in (raised.metadata.errors.python_grader_runtime_error_details or "")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on this host: a grader that reaches it has network access."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    reached = threading.Event()

    def accept() -> None:
        server.settimeout(60)
        try:
            server.accept()
            reached.set()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    assert not reached.is_set(), "a python grader reached the network"


ATTACKS = {
    "socket": """
def grade(sample, item):
    import socket
    socket.create_connection(("127.0.0.1", item["port"]), timeout=3)
    return 1.0
""",
    "files": """
def grade(sample, item):
    for path in item["paths"]:
        with open(path, "rb") as found:
            found.read(1)
    return 1.0
""",
    "fork": """
def grade(sample, item):
    import os
    while True:
        os.fork()
""",
    "loop": """
def grade(sample, item):
    while True:
        pass
""",
    "memory": """
def grade(sample, item):
    hoard = bytearray(10 * 1024 ** 3)
    return 1.0
""",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_malicious_python_grader_scores_zero_and_harms_nothing(
    client: openai.OpenAI, graders_server: ServerProcess, listener: int, attack: str
) -> None:
    data = graders_server.settings().data_dir
    item = {
        "port": listener,
        "paths": [str(data / "openft.db"), "/etc/passwd", str(Path(__file__).resolve())],
    }
    started = time.monotonic()
    ran = client.fine_tuning.alpha.graders.run(
        grader=python(ATTACKS[attack]),  # type: ignore[arg-type]
        model_sample="x",
        item=item,
        timeout=120,
    )
    assert ran.reward == 0.0
    errors = ran.metadata.errors
    assert errors.python_grader_runtime_error is True, errors
    assert time.monotonic() - started < SANDBOX_TIMEOUT_S + 30
    assert httpx.get(f"{graders_server.base_url}/readyz", timeout=10).status_code == 200
    # The server still grades.
    again = client.fine_tuning.alpha.graders.run(
        grader=python(PYTHON_SCORE),  # type: ignore[arg-type]
        model_sample="abcde",
        item={"scale": 5},
    )
    assert again.reward == 1.0


def test_score_model_is_judged_by_the_served_demo_model(
    trainer_client: openai.OpenAI,
) -> None:
    """o4-mini is mapped to the demo model (tiny-chat, random weights): its structured answer
    is a number whatever it is, clamped to the range, and its tokens are counted."""
    grader = {
        "type": "score_model",
        "name": "judge",
        "model": "o4-mini",
        "input": [
            {"role": "system", "content": "Score the answer from 0 to 1."},
            {"role": "user", "content": "Q: {{ item.question }} A: {{ sample.output_text }}"},
        ],
        "sampling_params": {"temperature": 0, "max_completions_tokens": 40, "seed": 1},
    }
    ran = trainer_client.fine_tuning.alpha.graders.run(
        grader=grader,  # type: ignore[arg-type]
        model_sample="Oslo",
        item={"question": "What is the capital of Norway?"},
        timeout=300,
    )
    assert 0.0 <= ran.reward <= 1.0
    errors = ran.metadata.errors
    assert not errors.model_grader_server_error, errors.model_grader_server_error_details
    assert ran.metadata.sampled_model_name == "o4-mini"
    usage = ran.model_grader_token_usage_per_model["o4-mini"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
