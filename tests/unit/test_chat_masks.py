from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
from transformers import PreTrainedTokenizerFast

from service.settings import BaseModelConfig
from tests.support import chat_templates as templates
from trainer.chat_masks import IGNORE_INDEX, UnsupportedChatTemplateError, tokenize_chat
from trainer.placement import load_tokenizer


class Case(NamedTuple):
    template: str
    options: dict[str, Any]
    end: str  # the end-of-turn token
    lead: str = ""  # a separator BPE may fold into the first trained token (Mistral's " ")


CASES: dict[str, Case] = {
    "chatml": Case(templates.CHATML, {}, "<|im_end|>"),
    "llama3": Case(
        templates.LLAMA3,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "adds_bos": True},
        "<|eot_id|>",
    ),
    "mistral": Case(
        templates.MISTRAL, {"bos_token": "<s>", "eos_token": "</s>", "adds_bos": True}, "</s>", " "
    ),
    "qwen3": Case(templates.QWEN3_REASONING, {}, "<|im_end|>"),
    "generation": Case(templates.CHATML_GENERATION, {}, "<|im_end|>"),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def tokenizer_for(name: str) -> PreTrainedTokenizerFast:
    return templates.build_tokenizer(CASES[name].template, **CASES[name].options)


def conversation(first_weight: int = 1) -> list[dict[str, Any]]:
    # The first user message repeats the first answer, so a search that starts too early is caught.
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "please say answer one"},
        {"role": "assistant", "content": "answer one", "weight": first_weight},
        {"role": "user", "content": "why is it cold"},
        {"role": "assistant", "content": "because of the weather."},
    ]


def tool_conversation() -> list[dict[str, Any]]:
    call = {"name": "get_weather", "arguments": '{"city": "paris"}'}
    return [
        {"role": "user", "content": "what is the weather in paris"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm"},
        {"role": "assistant", "content": "It is sunny."},
    ]


def trained_runs(
    tokenizer: PreTrainedTokenizerFast, labels: list[int], lead: str = ""
) -> list[str]:
    """Decode each contiguous run of trained labels; only `lead` is forgiven, stray text shows."""
    runs: list[list[int]] = []
    for position, label in enumerate(labels):
        if label != IGNORE_INDEX and (position == 0 or labels[position - 1] == IGNORE_INDEX):
            runs.append([])
        if label != IGNORE_INDEX:
            runs[-1].append(label)
    return [str(tokenizer.decode(run)).removeprefix(lead) for run in runs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_exactly_the_assistant_turns_and_their_end_token_train(name: str) -> None:
    tokenizer = tokenizer_for(name)
    end = CASES[name].end

    example = tokenize_chat(tokenizer, conversation())

    runs = trained_runs(tokenizer, example.labels, CASES[name].lead)
    assert runs == [f"answer one{end}", f"because of the weather.{end}"]
    assert example.n_trained_tokens == sum(label != IGNORE_INDEX for label in example.labels)
    assert example.n_tokens == len(example.input_ids)


@pytest.mark.parametrize("name", sorted(CASES))
def test_labels_copy_input_ids_and_the_text_is_the_full_rendering(name: str) -> None:
    tokenizer = tokenizer_for(name)
    messages = conversation()

    example = tokenize_chat(tokenizer, messages)

    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered
    assert len(example.labels) == len(example.input_ids)
    pairs = zip(example.input_ids, example.labels, strict=True)
    assert all(label in (token, IGNORE_INDEX) for token, label in pairs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_weight_zero_turn_takes_no_loss(name: str) -> None:
    tokenizer = tokenizer_for(name)
    end = CASES[name].end

    example = tokenize_chat(tokenizer, conversation(first_weight=0))

    runs = trained_runs(tokenizer, example.labels, CASES[name].lead)
    assert runs == [f"because of the weather.{end}"]


@pytest.mark.parametrize(
    ("name", "call_text"),
    [
        ("chatml", '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"paris\\"}"}'),
        ("llama3", '{"name": "get_weather", "parameters": "{\\"city\\": \\"paris\\"}"}'),
    ],
)
def test_a_tool_call_turn_trains_but_tools_and_results_do_not(name: str, call_text: str) -> None:
    tokenizer = tokenizer_for(name)
    end = CASES[name].end

    example = tokenize_chat(tokenizer, tool_conversation(), tools=TOOLS)

    runs = trained_runs(tokenizer, example.labels)
    assert runs[0].startswith(call_text) and runs[0].endswith(end)
    assert runs[1] == f"It is sunny.{end}"
    assert len(runs) == 2
    everything = str(tokenizer.decode(example.input_ids))
    assert "Weather now in a city" in everything and "sunny and warm" in everything
    assert "Weather now" not in "".join(runs) and "sunny and warm" not in "".join(runs)


@pytest.mark.parametrize(("name", "bos"), [("llama3", "<|begin_of_text|>"), ("mistral", "<s>")])
def test_a_template_that_writes_bos_gets_no_second_one(name: str, bos: str) -> None:
    tokenizer = tokenizer_for(name)
    bos_id = tokenizer.convert_tokens_to_ids(bos)

    example = tokenize_chat(tokenizer, conversation())

    assert tokenizer("hi")["input_ids"][0] == bos_id  # the tokenizer would add one by itself
    assert example.input_ids[0] == bos_id
    assert example.input_ids.count(bos_id) == 1


def test_a_template_without_bos_gets_the_tokenizers_own() -> None:
    tokenizer = templates.build_tokenizer(templates.CHATML, bos_token="<s>", adds_bos=True)
    bos_id = tokenizer.convert_tokens_to_ids("<s>")

    example = tokenize_chat(tokenizer, conversation())

    assert example.input_ids[0] == bos_id
    assert example.input_ids.count(bos_id) == 1
    assert trained_runs(tokenizer, example.labels)[0] == "answer one<|im_end|>"


def test_a_tokenizer_without_bos_adds_nothing() -> None:
    tokenizer = tokenizer_for("chatml")

    example = tokenize_chat(tokenizer, conversation())

    assert example.input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_reasoning_the_template_drops_from_earlier_turns_is_not_trained() -> None:
    tokenizer = tokenizer_for("qwen3")
    messages = conversation()
    messages[2]["content"] = "<think>\nreasoning one\n</think>\n\nanswer one"
    messages[4]["content"] = "<think>\nreasoning two\n</think>\n\nbecause of the weather."

    example = tokenize_chat(tokenizer, messages)

    assert trained_runs(tokenizer, example.labels) == [
        "answer one<|im_end|>",
        "<think>\nreasoning two\n</think>\n\nbecause of the weather.<|im_end|>",
    ]
    text = tokenizer.decode(example.input_ids)
    assert text == tokenizer.apply_chat_template(messages, tokenize=False)
    assert "reasoning one" not in text


def test_generation_markers_decide_the_mask() -> None:
    tokenizer = templates.build_tokenizer(templates.CHATML_GENERATION_CONTENT_ONLY)

    example = tokenize_chat(tokenizer, conversation(first_weight=0))

    assert trained_runs(tokenizer, example.labels) == ["because of the weather."]


def test_a_template_that_changes_the_assistant_text_is_refused() -> None:
    tokenizer = templates.build_tokenizer(templates.CHATML_UPPERCASE)

    with pytest.raises(UnsupportedChatTemplateError, match="changes assistant message 2"):
        tokenize_chat(tokenizer, conversation())


def test_a_weight_zero_turn_the_template_changes_is_not_checked() -> None:
    tokenizer = templates.build_tokenizer(templates.CHATML_UPPERCASE)
    messages = conversation(first_weight=0)
    messages[4]["weight"] = 0

    example = tokenize_chat(tokenizer, messages)

    assert example.n_trained_tokens == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_max_length_keeps_the_start_and_says_it_cut(name: str) -> None:
    tokenizer = tokenizer_for(name)
    full = tokenize_chat(tokenizer, conversation())
    cut = len(full.input_ids) - 3

    example = tokenize_chat(tokenizer, conversation(), max_length=cut)

    assert example.n_tokens == len(full.input_ids) > len(example.input_ids)
    assert example.input_ids == full.input_ids[:cut]
    assert example.labels == full.labels[:cut]
    assert example.n_trained_tokens == sum(label != IGNORE_INDEX for label in full.labels[:cut])
    assert example.n_trained_tokens < full.n_trained_tokens


def test_max_length_that_fits_changes_nothing() -> None:
    tokenizer = tokenizer_for("chatml")
    full = tokenize_chat(tokenizer, conversation())

    example = tokenize_chat(tokenizer, conversation(), max_length=len(full.input_ids))

    assert example == full


def test_any_error_of_the_template_is_an_unsupported_template() -> None:
    """SmolLM2's own template concatenates content: a tool-call turn's null content is a
    TypeError, not jinja's TemplateError, and must still fail the job at validation."""
    joins = "{% for m in messages %}{{ '<|im_start|>' + m['content'] + '<|im_end|>' }}{% endfor %}"
    tokenizer = templates.build_tokenizer(joins)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]

    with pytest.raises(UnsupportedChatTemplateError, match="TypeError"):
        tokenize_chat(tokenizer, messages)


def test_the_chat_template_setting_replaces_the_models_own(tmp_path: Path) -> None:
    templates.build_tokenizer(templates.CHATML).save_pretrained(tmp_path / "model")
    (tmp_path / "tools.jinja").write_text(templates.CHATML_GENERATION)
    as_file = BaseModelConfig(
        name="m", path=str(tmp_path / "model"), chat_template=str(tmp_path / "tools.jinja")
    )
    inline = as_file.model_copy(update={"chat_template": templates.CHATML_GENERATION})

    assert load_tokenizer(as_file).chat_template == templates.CHATML_GENERATION
    assert load_tokenizer(inline).chat_template == templates.CHATML_GENERATION
    assert (
        load_tokenizer(as_file.model_copy(update={"chat_template": None})).chat_template
        == templates.CHATML
    )
