"""Training files to tokenized chat examples, through the one validator of fine-tuning data.

The stored file streams through ``DatasetValidator`` once: it checks every example in OpenAI's
terms and hands each valid one to the base model's tokenizer, which both counts its tokens (for
truncation and billing) and keeps the tokenized example for training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from service.datasets.checks import COMPLETION, format_of
from service.datasets.validator import DatasetValidator, ItemCheck, ValidationReport
from service.drift import message_texts
from service.prices import cost_of
from service.settings import BaseModelConfig
from trainer.chat_masks import (
    IGNORE_INDEX,
    TokenizedExample,
    UnsupportedChatTemplateError,
    tokenize_chat,
    tokenize_completion,
    tokenize_prompt,
)


@dataclass  # not frozen: raising sets __traceback__ (and a contextmanager re-raise does too)
class DatasetError(Exception):
    """A training-file problem that fails the job with OpenAI's error object."""

    code: str
    message: str
    param: str | None = "training_file"


@dataclass(frozen=True)
class PreferencePair:
    """A DPO example: the same prompt with its preferred and its non-preferred answer, each
    tokenized with loss labels on that answer only."""

    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def n_tokens(self) -> int:
        return self.chosen.n_tokens + self.rejected.n_tokens


@dataclass(frozen=True)
class PromptExample:
    """A reinforcement example: the prompt up to the answer's opening, the tools the model may
    call, and the data row its grader reads (``item``: every key but ``messages``, ``tools``)."""

    prompt_ids: list[int]
    item: dict[str, Any]
    n_tokens: int  # of the prompt, before truncation


TrainingExample = TokenizedExample | PreferencePair | PromptExample


@dataclass(frozen=True)
class PreparedFile:
    examples: list[TrainingExample]
    report: ValidationReport
    prompt_tokens: Counter[int] = field(default_factory=Counter)
    """Token id -> occurrences in the prompts of trained turns (drift's token sketch)."""


def prepare_file(
    chunks: Iterable[bytes],
    tokenizer: PreTrainedTokenizerBase,
    *,
    file_id: str,
    method: str,
    max_length: int,
    param: str = "training_file",
    item_check: ItemCheck | None = None,
) -> PreparedFile:
    """Validate and tokenize a training (or validation) file; a problem raises ``DatasetError``.

    ``item_check``: a reinforcement job's check that its grader finds what it reads in each
    example."""
    examples: list[TrainingExample] = []
    prompt_tokens: Counter[int] = Counter()

    def chat(messages: list[dict[str, Any]], tools: Any) -> TokenizedExample:
        try:
            return tokenize_chat(
                tokenizer, chat_messages(messages), tools=tools, max_length=max_length
            )
        except UnsupportedChatTemplateError as exc:
            raise DatasetError(
                "unsupported_chat_template", f"Example {validator.line}: {exc}", None
            ) from exc

    def tokenize(example: dict[str, Any]) -> int:
        if format_of(example) == COMPLETION:  # legacy prompt/completion (supervised only)
            tokenized = tokenize_completion(
                tokenizer, example["prompt"], example["completion"], max_length=max_length
            )
            examples.append(tokenized)
            count_texts(tokenizer, [example["prompt"]], prompt_tokens)
            return tokenized.n_tokens
        if method == "reinforcement":
            prompt = reinforcement_prompt(tokenizer, example, max_length, validator.line)
            examples.append(prompt)
            count_texts(tokenizer, message_texts(example["messages"]), prompt_tokens)
            return prompt.n_tokens
        if method == "dpo":
            pair, messages = preference_pair(example, chat)
            examples.append(pair)
            count_prompt_tokens(tokenizer, messages, prompt_tokens)
            return pair.n_tokens
        tokenized = chat(example["messages"], chat_tools(example))
        examples.append(tokenized)
        count_prompt_tokens(tokenizer, example["messages"], prompt_tokens)
        return tokenized.n_tokens

    validator = DatasetValidator(
        param=param,
        file_id=file_id,
        method=method,
        count_tokens=tokenize,
        token_limit=max_length,
        item_check=item_check,
    )
    report = _run(validator, chunks)
    return PreparedFile(examples, report, prompt_tokens)


def reinforcement_prompt(
    tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], max_length: int, line: int
) -> PromptExample:
    """The prompt's tokens (its start cut when longer than ``max_length``: the last turns are
    what the answer follows) and the grader's item."""
    try:
        ids = tokenize_prompt(
            tokenizer, chat_messages(example["messages"]), tools=chat_tools(example)
        )
    except UnsupportedChatTemplateError as exc:
        raise DatasetError("unsupported_chat_template", f"Example {line}: {exc}", None) from exc
    return PromptExample(ids[-max_length:], item_of(example), len(ids))


def item_of(example: dict[str, Any]) -> dict[str, Any]:
    """What a reinforcement example's grader reads as ``item``: all but the prompt and tools."""
    return {k: v for k, v in example.items() if k not in ("messages", "tools")}


def preference_pair(
    example: dict[str, Any], chat: Callable[[list[dict[str, Any]], Any], TokenizedExample]
) -> tuple[PreferencePair, list[dict[str, Any]]]:
    """Both answers after the same prompt; earlier assistant turns of the prompt do not train.

    Also returns the chosen conversation (the prompt the drift profile counts)."""
    prompt = example["input"]
    context = [
        {**m, "weight": 0} if m.get("role") == "assistant" else m for m in prompt["messages"]
    ]
    tools = chat_tools(prompt)
    chosen = [*context, *example["preferred_output"]]
    rejected = [*context, *example["non_preferred_output"]]
    return PreferencePair(chat(chosen, tools), chat(rejected, tools)), chosen


def count_prompt_tokens(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], into: Counter[int]
) -> None:
    """Count the tokens of the text before each trained assistant turn, as a live request for
    that turn would carry it, tokenized as the gateway does (the ``tokenizers`` library on the
    message texts alone). A message before k trained turns counts k times."""
    trained_after = 0
    weights = [0] * len(messages)
    for index in range(len(messages) - 1, -1, -1):
        weights[index] = trained_after
        message = messages[index]
        if message.get("role") == "assistant" and message.get("weight", 1) != 0:
            trained_after += 1
    for message, weight in zip(messages, weights, strict=True):
        for _ in range(weight):
            count_texts(tokenizer, message_texts([message]), into)


def count_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], into: Counter[int]) -> None:
    """Count the tokens of ``texts`` as the gateway's drift thread tokenizes them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: no token sketch for this model
        return
    for text in texts:
        into.update(backend.encode(text, add_special_tokens=False).ids)


def _run(validator: DatasetValidator, chunks: Iterable[bytes]) -> ValidationReport:
    for chunk in chunks:
        validator.feed(chunk)
    report = validator.finish()
    error = report.error()
    if error is not None:
        raise DatasetError(error.code, error.message, error.param)
    return report


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: a list of text parts becomes one string, and the
    deprecated ``function_call`` / ``role: function`` become ``tool_calls`` / ``role: tool``."""
    found: list[dict[str, Any]] = []
    call_id = ""
    for message in messages:
        if isinstance(message.get("content"), list):
            message = {**message, "content": "".join(p["text"] for p in message["content"])}
        if message.get("function_call") is not None:
            call_id = f"call_{len(found)}"
            call = {"id": call_id, "type": "function", "function": message["function_call"]}
            message = {k: v for k, v in message.items() if k != "function_call"}
            message["tool_calls"] = [call]
        elif message.get("role") == "function":
            message = {**message, "role": "tool", "tool_call_id": call_id}
        found.append(message)
    return found


def chat_tools(example: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The example's ``tools``, or its deprecated ``functions`` as tools."""
    if example.get("tools"):
        return list(example["tools"])
    if example.get("functions"):
        return [{"type": "function", "function": f} for f in example["functions"]]
    return None


def summary_events(report: ValidationReport, n_epochs: int, base: BaseModelConfig) -> list[str]:
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
    price = base.training_price_per_1m_tokens
    if price is not None:
        cost = cost_of(base, trained_tokens=billed).training
        amount = f"{cost:,.2f}" if cost >= 0.01 else f"{cost:.2g}"
        billing += f"; estimated cost ${amount} at ${price:g} per 1M tokens"
    events.append(billing)
    return events


def prompt_lengths(examples: list[TrainingExample]) -> list[int]:
    """Tokens before each trained assistant turn: its prompt as vLLM would count ``prompt_tokens``
    (the rendered conversation so far plus the generation prompt)."""
    lengths = []
    for found in examples:
        if isinstance(found, PromptExample):
            lengths.append(len(found.prompt_ids))
            continue
        example = found.chosen if isinstance(found, PreferencePair) else found
        trained_before = False
        for position, label in enumerate(example.labels):
            trained = label != IGNORE_INDEX
            if trained and not trained_before:
                lengths.append(position)
            trained_before = trained
    return lengths
