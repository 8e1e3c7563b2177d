"""Reading a training file into tokenized chat examples, with the minimal checks of the slice.

The full catalogue of OpenAI's format checks belongs to the validation stage; here a file must
hold at least 10 chat examples, each a JSON object with ``messages`` and an assistant turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from transformers import PreTrainedTokenizerBase

from trainer.chat_masks import TokenizedExample, UnsupportedChatTemplateError, tokenize_chat

MIN_EXAMPLES = 10


@dataclass(frozen=True)
class DatasetError(Exception):
    """A training-file problem that fails the job with OpenAI's error object."""

    code: str
    message: str
    param: str | None = "training_file"


def parse_examples(lines: Iterable[bytes], param: str = "training_file") -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        examples.append(_chat_example(raw, len(examples) + 1, param))
    if len(examples) < MIN_EXAMPLES:
        kind = "Training" if param == "training_file" else "Validation"
        raise DatasetError(
            "invalid_n_examples",
            f"{kind} file has {len(examples)} example(s), but must have at least "
            f"{MIN_EXAMPLES} examples",
            param,
        )
    return examples


def _chat_example(raw: bytes, number: int, param: str) -> dict[str, Any]:
    def invalid(detail: str) -> DatasetError:
        return DatasetError(
            "invalid_training_file" if param == "training_file" else "invalid_validation_file",
            "The job failed due to an invalid training file. Invalid file format. "
            f"Example {number}: {detail}",
            param,
        )

    try:
        example = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"not valid JSON ({exc.msg})") from None
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
        raise invalid("missing 'messages' list")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in example["messages"]):
        raise invalid("no assistant message")
    return example


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]], max_length: int
) -> list[TokenizedExample]:
    """Tokenize with the base model's chat template; a template we cannot mask fails the job."""
    tokenized = []
    for number, example in enumerate(examples, start=1):
        try:
            tokenized.append(
                tokenize_chat(
                    tokenizer,
                    example["messages"],
                    tools=example.get("tools"),
                    max_length=max_length,
                )
            )
        except UnsupportedChatTemplateError as exc:
            raise DatasetError(
                "unsupported_chat_template", f"Example {number}: {exc}", None
            ) from exc
    return tokenized
