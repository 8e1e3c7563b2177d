"""What the worker says before training, and how validated chats reach the chat template."""

from __future__ import annotations

from collections import Counter
from typing import Any

from service.datasets.validator import ValidationReport
from service.settings import BaseModelConfig
from tests.support.chat_templates import CHATML, build_tokenizer
from trainer.chat_masks import IGNORE_INDEX, tokenize_completion
from trainer.dataset import chat_messages, chat_tools, count_prompt_tokens, summary_events


def report(**counts: int) -> ValidationReport:
    found = ValidationReport("training_file", "file-x", "supervised", token_limit=2048)
    for name, value in counts.items():
        setattr(found, name, value)
    return found


def priced(training_price_per_1m_tokens: float | None) -> BaseModelConfig:
    return BaseModelConfig(
        name="base", path="base", training_price_per_1m_tokens=training_price_per_1m_tokens
    )


def test_the_summary_counts_examples_tokens_and_billing() -> None:
    events = summary_events(report(n_examples=120, total_tokens=51_234), 3, priced(None))

    assert events == [
        "Training file has 120 examples with 51,234 tokens",
        "Tokens billed: 153,702 (51,234 tokens x 3 epochs)",
    ]


def test_a_price_adds_the_estimated_cost_and_truncation_is_said() -> None:
    events = summary_events(
        report(n_examples=10, total_tokens=2_000_000, n_truncated=1), 2, priced(3.0)
    )

    assert events == [
        "1 example exceeds the 2048-token limit and will be truncated",
        "Training file has 10 examples with 2,000,000 tokens",
        "Tokens billed: 4,000,000 (2,000,000 tokens x 2 epochs); estimated cost $12.00 at $3 "
        "per 1M tokens",
    ]
    assert summary_events(report(n_truncated=4), 1, priced(None))[0].startswith(
        "4 examples exceed the"
    )
    assert summary_events(report(total_tokens=100), 1, priced(2.5))[-1].endswith(
        "cost $0.00025 at $2.5 per 1M tokens"
    )


def test_text_parts_become_one_string_and_other_messages_stay_as_written() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "you"}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}], "weight": 1},
    ]

    assert chat_messages(messages) == [{"role": "user", "content": "Hello, you"}, messages[1]]


def test_deprecated_functions_become_tools_and_tool_messages() -> None:
    weather = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    example = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "function_call": call},
            {"role": "function", "name": "get_weather", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "functions": [weather],
    }

    messages = chat_messages(example["messages"])

    assert chat_tools(example) == [{"type": "function", "function": weather}]
    assert chat_tools({"tools": [{"type": "function", "function": weather}]}) == chat_tools(example)
    assert chat_tools({"messages": []}) is None
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
    }
    assert messages[2] == {
        "role": "tool",
        "name": "get_weather",
        "content": "sunny",
        "tool_call_id": "call_1",
    }
    assert messages[3] == example["messages"][3]


def test_prompt_tokens_count_each_message_once_per_trained_turn_after_it() -> None:
    tokenizer = build_tokenizer(CHATML)
    texts = ["Be brief.", "first question", "first answer", "second", "skipped", "third", "last"]
    roles = ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    messages: list[dict[str, Any]] = [
        {"role": role, "content": text} for role, text in zip(roles, texts, strict=True)
    ]
    messages[4]["weight"] = 0  # not trained: its prompt is not a prompt the model learned from
    messages[1]["content"] = [{"type": "text", "text": "first question"}]

    counted: Counter[int] = Counter()
    count_prompt_tokens(tokenizer, messages, counted)

    expected: Counter[int] = Counter()
    for text, times in zip(texts, [2, 2, 1, 1, 1, 1, 0], strict=True):
        for _ in range(times):
            expected.update(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)
    assert counted == expected and counted


def test_a_legacy_example_trains_on_its_completion_and_the_end_of_text_only() -> None:
    tokenizer = build_tokenizer(CHATML)
    prompt_ids = tokenizer("The capital of France is", add_special_tokens=True).input_ids
    answer_ids = tokenizer(" Paris", add_special_tokens=False).input_ids

    example = tokenize_completion(tokenizer, "The capital of France is", " Paris")
    cut = tokenize_completion(tokenizer, "The capital of France is", " Paris", max_length=3)

    assert example.input_ids == [*prompt_ids, *answer_ids, tokenizer.eos_token_id]
    assert example.labels == [IGNORE_INDEX] * len(prompt_ids) + [
        *answer_ids,
        tokenizer.eos_token_id,
    ]
    assert example.n_trained_tokens == len(answer_ids) + 1
    assert (len(cut.input_ids), cut.n_tokens) == (3, len(example.input_ids))
