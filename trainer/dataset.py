"""Training files to tokenized chat examples, through the one validator of fine-tuning data.

The stored file streams through ``DatasetValidator`` once: it checks every example in OpenAI's
terms and hands each valid one to the base model's tokenizer, which both counts its tokens (for
truncation and billing) and keeps the tokenized example for training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from service.datasets.validator import DatasetValidator, ValidationReport
from service.drift import message_texts
from trainer.chat_masks import (
    IGNORE_INDEX,
    TokenizedExample,
    UnsupportedChatTemplateError,
    tokenize_chat,
)


@dataclass(frozen=True)
class DatasetError(Exception):
    """A training-file problem that fails the job with OpenAI's error object."""

    code: str
    message: str
    param: str | None = "training_file"


@dataclass(frozen=True)
class PreparedFile:
    examples: list[TokenizedExample]
    report: ValidationReport
    prompt_tokens: Counter[int] = field(default_factory=Counter)
    """Token id -> occurrences in the prompts of trained turns (drift's token sketch)."""


def prepare_training_file(
    chunks: Iterable[bytes],
    tokenizer: PreTrainedTokenizerBase,
    *,
    file_id: str,
    method: str,
    max_length: int,
) -> PreparedFile:
    """Validate and tokenize a training file; any problem raises ``DatasetError``."""
    examples: list[TokenizedExample] = []
    prompt_tokens: Counter[int] = Counter()

    def tokenize(example: dict[str, Any]) -> int:
        try:
            tokenized = tokenize_chat(
                tokenizer,
                chat_messages(example["messages"]),
                tools=example.get("tools"),
                max_length=max_length,
            )
        except UnsupportedChatTemplateError as exc:
            raise DatasetError(
                "unsupported_chat_template", f"Example {validator.line}: {exc}", None
            ) from exc
        examples.append(tokenized)
        count_prompt_tokens(tokenizer, example["messages"], prompt_tokens)
        return tokenized.n_tokens

    validator = DatasetValidator(
        param="training_file",
        file_id=file_id,
        method=method,
        count_tokens=tokenize,
        token_limit=max_length,
    )
    report = _run(validator, chunks)
    return PreparedFile(examples, report, prompt_tokens)


def count_prompt_tokens(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], into: Counter[int]
) -> None:
    """Count the tokens of the text before each trained assistant turn, as a live request for
    that turn would carry it, tokenized as the gateway does (the ``tokenizers`` library on the
    message texts alone). A message before k trained turns counts k times."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: no token sketch for this model
        return
    trained_after = 0
    weights = [0] * len(messages)
    for index in range(len(messages) - 1, -1, -1):
        weights[index] = trained_after
        message = messages[index]
        if message.get("role") == "assistant" and message.get("weight", 1) != 0:
            trained_after += 1
    for message, weight in zip(messages, weights, strict=True):
        texts = message_texts([message]) if weight else []
        for encoding in backend.encode_batch(texts, add_special_tokens=False) if texts else []:
            for _ in range(weight):
                into.update(encoding.ids)


def check_validation_file(
    chunks: Iterable[bytes], *, file_id: str, method: str
) -> ValidationReport:
    """Validate a validation file (format only: it is not trained on)."""
    return _run(DatasetValidator(param="validation_file", file_id=file_id, method=method), chunks)


def _run(validator: DatasetValidator, chunks: Iterable[bytes]) -> ValidationReport:
    for chunk in chunks:
        validator.feed(chunk)
    report = validator.finish()
    error = report.error()
    if error is not None:
        raise DatasetError(error.code, error.message, error.param)
    return report


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: a list of text parts becomes one string."""
    return [
        {**message, "content": "".join(part["text"] for part in message["content"])}
        if isinstance(message.get("content"), list)
        else message
        for message in messages
    ]


def summary_events(
    report: ValidationReport, n_epochs: int, price_per_1m_tokens: float | None
) -> list[str]:
    """What the job will train on and bill, said before training starts."""
    events = []
    if report.n_truncated and report.token_limit is not None:
        many = report.n_truncated != 1
        events.append(
            f"{report.n_truncated} example{'s' if many else ''} exceed{'' if many else 's'} the "
            f"{report.token_limit}-token limit and will be truncated"
        )
    events.append(
        f"Training file has {report.n_examples} examples with {report.total_tokens:,} tokens"
    )
    billed = report.total_tokens * n_epochs
    billing = f"Tokens billed: {billed:,} ({report.total_tokens:,} tokens x {n_epochs} epochs)"
    if price_per_1m_tokens is not None:
        cost = billed / 1_000_000 * price_per_1m_tokens
        amount = f"{cost:,.2f}" if cost >= 0.01 else f"{cost:.2g}"
        billing += f"; estimated cost ${amount} at ${price_per_1m_tokens:g} per 1M tokens"
    events.append(billing)
    return events


def prompt_lengths(examples: list[TokenizedExample]) -> list[int]:
    """Tokens before each trained assistant turn: its prompt as vLLM would count ``prompt_tokens``
    (the rendered conversation so far plus the generation prompt)."""
    lengths = []
    for example in examples:
        trained_before = False
        for position, label in enumerate(example.labels):
            trained = label != IGNORE_INDEX
            if trained and not trained_before:
                lengths.append(position)
            trained_before = trained
    return lengths
