"""The offline demo model: built once, loads in transformers, renders tool chats, takes LoRA."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

import trainer.demo_model as demo_model_module
from tests.support.ci import require
from trainer.demo_model import DEMO_MODEL_VERSION, MARKER_FILE, create_demo_model, main

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
            },
        ],
    },
    {"role": "tool", "content": "21 C"},
    {"role": "tool", "content": "3 C"},
    {"role": "assistant", "content": "Paris 21 C, Oslo 3 C."},
    {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
]
EXPECTED_TOOL_CHAT = (
    "<|im_start|>system\nYou are terse.\n\n"
    "You may call one or more functions to help with the request. "
    "The functions are described as JSON inside <tools></tools>:\n<tools>\n"
    + json.dumps(TOOLS[0])
    + "\n</tools>\n\nTo call a function, reply with one JSON object per call, each inside "
    "<tool_call></tool_call> tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <arguments-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    "<|im_end|>\n"
    "<|im_start|>user\n<tool_response>\n21 C\n</tool_response>\n"
    "<tool_response>\n3 C\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nParis 21 C, Oslo 3 C.<|im_end|>\n"
    "<|im_start|>user\nThanks!<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo model shared by the read-only tests of this module."""
    require_ml_stack()
    return create_demo_model(tmp_path_factory.mktemp("models") / "tiny-chat")


def require_ml_stack() -> None:
    installed = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft"))
    require(installed, "the training stack (torch, transformers, peft)")


def no_rebuild(seed: int) -> None:
    raise AssertionError("a complete demo model was rebuilt")


def file_stamps(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def test_the_model_loads_in_transformers_with_vllm_friendly_shapes(demo_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(demo_model)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    config = model.config
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])

    assert config.model_type == "qwen2"
    assert model.model.layers[0].self_attn.head_dim == 64
    assert config.vocab_size % 64 == 0 and len(tokenizer) <= config.vocab_size < len(tokenizer) + 64
    assert next(model.parameters()).dtype.is_floating_point and str(config.dtype) == "torch.float32"
    assert (config.eos_token_id, config.pad_token_id) == (im_end, endoftext)
    assert GenerationConfig.from_pretrained(demo_model).eos_token_id == [im_end, endoftext]
    size = sum(path.stat().st_size for path in demo_model.iterdir())
    assert size < 16 * 2**20
    assert all(path.stat().st_mode & 0o444 == 0o444 for path in [demo_model, *demo_model.iterdir()])


def test_the_tokenizer_round_trips_text_and_keeps_chat_tokens_whole(demo_model: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    raw = Tokenizer.from_file(str(demo_model / "tokenizer.json"))
    text = 'On 2024-05-17 the café  costs $12.50!\n{"name": "get_weather", "arguments": {}}\tok'
    ids = tokenizer(text)["input_ids"]
    specials = ["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>"]

    assert 2000 <= len(tokenizer) <= 4000
    assert tokenizer.decode(ids) == text
    assert raw.encode(text).ids == ids  # vLLM and the trainer split text the same way
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None and ids[0] not in tokenizer.all_special_ids
    assert all(len(tokenizer(token)["input_ids"]) == 1 for token in specials)
    assert "<tool_call>" in tokenizer.decode(
        tokenizer("<tool_call>x")["input_ids"], skip_special_tokens=True
    )


def test_the_chat_template_renders_tools_tool_calls_and_the_generation_prompt(
    demo_model: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    rendered = tokenizer.apply_chat_template(
        TOOL_CHAT, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    plain = tokenizer.apply_chat_template(TOOL_CHAT[1:2], tokenize=False)

    assert rendered == EXPECTED_TOOL_CHAT
    assert plain == "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"


def test_the_template_marks_only_assistant_replies_for_the_loss(demo_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    chat = [*TOOL_CHAT[1:2], {"role": "assistant", "content": "Sunny."}]
    encoded = tokenizer.apply_chat_template(
        chat, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]

    assert tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "Sunny.<|im_end|>"


def test_a_second_call_keeps_the_model_and_the_same_seed_builds_the_same_files(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "tiny-chat"
    assert create_demo_model(target) == target
    before = file_stamps(target)

    monkeypatch.setattr(demo_model_module, "train_tokenizer", no_rebuild)
    assert create_demo_model(target, seed=5) == target

    assert file_stamps(target) == before
    for name in ("tokenizer.json", "model.safetensors"):
        assert (target / name).read_bytes() == (demo_model / name).read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny-chat"]


def test_leftovers_from_a_crashed_build_do_not_break_the_next_one(tmp_path: Path) -> None:
    require_ml_stack()
    stale = tmp_path / ".tiny-chat.partial-crashed"
    stale.mkdir()
    (stale / "config.json").write_text("{half")
    os.utime(stale, (0, 0))
    running = tmp_path / ".tiny-chat.partial-running"  # maybe another process's build
    running.mkdir()

    target = create_demo_model(tmp_path / "tiny-chat")

    assert json.loads((target / MARKER_FILE).read_text())["version"] == DEMO_MODEL_VERSION
    assert sorted(path.name for path in tmp_path.iterdir()) == [running.name, "tiny-chat"]


def test_outdated_or_empty_folders_are_filled_and_a_foreign_one_is_refused(
    tmp_path: Path,
) -> None:
    require_ml_stack()
    outdated = tmp_path / "old" / "tiny-chat"
    outdated.mkdir(parents=True)
    (outdated / MARKER_FILE).write_text(json.dumps({"version": 0}))
    empty = tmp_path / "empty"  # e.g. a mount point made in advance
    empty.mkdir()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")

    create_demo_model(outdated)
    create_demo_model(empty)
    with pytest.raises(FileExistsError):
        create_demo_model(foreign)

    for built in (outdated, empty):
        assert json.loads((built / MARKER_FILE).read_text())["version"] == DEMO_MODEL_VERSION
        assert (built / "model.safetensors").is_file()
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "mine", "old"]


def test_the_command_line_builds_and_prints_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_ml_stack()
    target = tmp_path / "tiny-chat"

    assert main(["--output", str(target), "--seed", "3"]) == 0

    assert capsys.readouterr().out.strip() == str(target)
    assert json.loads((target / MARKER_FILE).read_text())["seed"] == 3


def test_a_lora_adapter_trains_and_saves_in_a_vllm_loadable_form(
    demo_model: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    base = AutoModelForCausalLM.from_pretrained(demo_model)
    frozen = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=LORA_TARGETS, lora_dropout=0.0, bias="none"
    )
    model = get_peft_model(base, lora)
    chat = [*TOOL_CHAT[1:2], {"role": "assistant", "content": "Banana banana banana."}]
    ids = tokenizer.apply_chat_template(chat, return_dict=True, return_tensors="pt")["input_ids"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-3)

    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(tmp_path / "adapter")

    assert losses[-1] < losses[0] - 1.0, losses
    assert torch.equal(base.model.layers[0].self_attn.q_proj.base_layer.weight, frozen)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] is None and config["bias"] == "none" and config["r"] == 8
    assert sorted(config["target_modules"]) == sorted(LORA_TARGETS)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 0
