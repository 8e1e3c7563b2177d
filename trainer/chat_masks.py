"""Tokenizing chats for training: the model's own template renders, only assistant turns train."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import BatchEncoding, PreTrainedTokenizerBase

IGNORE_INDEX = -100

Span = tuple[int, int]
Messages = list[dict[str, Any]]
# What transformers' apply_chat_template takes as `tools` (JSON schemas, here).
Tools = list[dict[Any, Any] | Callable[..., Any]] | None

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
_LEADING_REASONING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


@dataclass(frozen=True)
class TokenizedExample:
    """One conversation as token ids and labels; labels are IGNORE_INDEX where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    n_trained_tokens: int
    n_tokens: int  # before truncation


class UnsupportedChatTemplateError(ValueError):
    """The model's chat template renders assistant turns in a way training cannot mask safely."""


@dataclass(frozen=True)
class _Turn:
    index: int
    message: dict[str, Any]
    positions: list[int]


def tokenize_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    tools: list[dict[str, Any]] | None = None,
    max_length: int | None = None,
) -> TokenizedExample:
    """Tokenize `messages` with the model's chat template; weight-0 assistant turns do not train."""
    _require_chat_support(tokenizer)
    schemas: Tools = None if tools is None else [*tools]
    if _GENERATION_BLOCK.search(tokenizer.get_chat_template(None, tools)):
        input_ids, turns = _tokenize_with_markers(tokenizer, messages, schemas)
    else:
        input_ids, turns = _tokenize_with_prefixes(tokenizer, messages, schemas)
    for turn in turns:
        _verify(tokenizer, input_ids, turn)
    return _example(input_ids, turns, max_length)


def tokenize_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """A prompt as the model sees it before answering: rendered with the generation prompt
    (the assistant turn's opening), token ids as vLLM would make them."""
    if not tokenizer.chat_template:
        raise UnsupportedChatTemplateError("the model's tokenizer has no chat template")
    text = _render(tokenizer, messages, None if tools is None else [*tools], generation_prompt=True)
    bos = tokenizer.bos_token
    adds_special = not (isinstance(bos, str) and bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=adds_special)["input_ids"])


def _require_chat_support(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        raise UnsupportedChatTemplateError("the model's tokenizer has no chat template")
    if not tokenizer.is_fast:
        raise UnsupportedChatTemplateError(
            "the model has no fast tokenizer, which masking assistant turns needs (offset mapping)"
        )


def _is_trained(message: dict[str, Any]) -> bool:
    return message.get("role") == "assistant" and message.get("weight", 1) != 0


def _tokenize_with_markers(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, tools: Tools
) -> tuple[list[int], list[_Turn]]:
    # The template marks assistant text itself, so transformers' own mask is the authority; it
    # tokenizes the rendering as is (no special tokens added), so such a template owns its BOS.
    encoding = _apply(
        tokenizer, messages, tools, return_dict=True, return_assistant_tokens_mask=True
    )
    if not isinstance(encoding, BatchEncoding):
        raise UnsupportedChatTemplateError("the chat template did not tokenize to an encoding")
    runs = _runs(encoding["assistant_masks"])
    indices = [i for i, message in enumerate(messages) if message.get("role") == "assistant"]
    if len(runs) != len(indices):
        raise UnsupportedChatTemplateError(
            f"the chat template's generation blocks mark {len(runs)} spans "
            f"for {len(indices)} assistant messages"
        )
    turns = [_Turn(i, messages[i], run) for i, run in zip(indices, runs, strict=True)]
    return list(encoding["input_ids"]), [turn for turn in turns if _is_trained(turn.message)]


def _runs(mask: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for position, flag in enumerate(mask):
        if flag and (position == 0 or not mask[position - 1]):
            runs.append([])
        if flag:
            runs[-1].append(position)
    return runs


def _tokenize_with_prefixes(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, tools: Tools
) -> tuple[list[int], list[_Turn]]:
    text = _render(tokenizer, messages, tools)
    spans = _assistant_spans(tokenizer, messages, tools, text)
    # A template that writes BOS itself must not get a second one from the tokenizer.
    bos = tokenizer.bos_token
    adds_special = not (isinstance(bos, str) and bos and text.startswith(bos))
    encoding = tokenizer(text, add_special_tokens=adds_special, return_offsets_mapping=True)
    offsets: list[Span] = encoding["offset_mapping"]
    turns = [_Turn(i, messages[i], _positions(offsets, span)) for i, span in spans]
    return list(encoding["input_ids"]), turns


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    tools: Tools,
    *,
    generation_prompt: bool = False,
) -> str:
    if not messages:
        return ""
    rendered = _apply(
        tokenizer, messages, tools, tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(rendered, str):
        raise UnsupportedChatTemplateError("the chat template did not render to text")
    return rendered


def _apply(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, tools: Tools, **options: Any
) -> object:
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, **options)
    except Exception as exc:  # jinja's TemplateError, or a TypeError on content it cannot join
        raise UnsupportedChatTemplateError(
            f"the chat template failed to render: {type(exc).__name__}: {exc}"
        ) from exc


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, tools: Tools, text: str
) -> list[tuple[int, Span]]:
    spans: list[tuple[int, Span]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if _is_trained(message):
            span = _locate_turn(tokenizer, messages, tools, text, index, cursor)
            spans.append((index, span))
            cursor = span[1]
    return spans


def _locate_turn(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    tools: Tools,
    text: str,
    index: int,
    cursor: int,
) -> Span:
    """Find assistant turn `index` in the full rendering `text`, at or after `cursor`."""
    before = _render(tokenizer, messages[:index], tools, generation_prompt=True)
    after = _render(tokenizer, messages[: index + 1], tools)
    segment = after[_common_prefix(before, after) :].strip()
    # The turn cannot start before the point where the full text stops agreeing with its prompt.
    start = max(cursor, _common_prefix(before, text))
    found = text.find(segment, start) if segment else -1
    if found >= 0:
        return found, found + len(segment)
    # The template rewrote this turn once later turns followed (e.g. dropped its reasoning).
    for anchor in _content_forms(messages[index]):
        if anchor in segment and (at := text.find(anchor, start)) >= 0:
            return _grow(text, segment, anchor, at, start)
    raise UnsupportedChatTemplateError(
        f"assistant message {index} could not be found in the chat template's rendering"
    )


def _content_forms(message: dict[str, Any]) -> list[str]:
    """The message's text as written, then without a leading reasoning block templates may drop."""
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return []
    forms = [content.strip(), _LEADING_REASONING.sub("", content).strip()]
    return [form for i, form in enumerate(forms) if form and form not in forms[:i]]


def _grow(text: str, segment: str, anchor: str, at: int, floor: int) -> Span:
    """Widen the anchor's span in `text` while it agrees with the turn's own rendering."""
    in_segment = segment.index(anchor)
    end = at + len(anchor)
    left = _common_prefix(segment[:in_segment][::-1], text[floor:at][::-1])
    right = _common_prefix(segment[in_segment + len(anchor) :], text[end:])
    return _strip_span(text, (at - left, end + right))


def _strip_span(text: str, span: Span) -> Span:
    start, end = span
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())


def _common_prefix(a: str, b: str) -> int:
    # Binary search over slice comparisons: C-speed even for long conversations.
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _positions(offsets: list[Span], span: Span) -> list[int]:
    start, end = span
    return [i for i, (left, right) in enumerate(offsets) if left < end and right > start]


def _verify(tokenizer: PreTrainedTokenizerBase, input_ids: list[int], turn: _Turn) -> None:
    """Refuse to train when the trained tokens do not give back the assistant's own text."""
    # No clean-up: it would re-space punctuation and hide or fake a mismatch.
    ids = [input_ids[p] for p in turn.positions]
    decoded = str(tokenizer.decode(ids, clean_up_tokenization_spaces=False))
    forms = _content_forms(turn.message)
    names = [call.get("function", {}).get("name", "") for call in _tool_calls(turn.message)]
    shows_content = not forms or any(form in decoded for form in forms)
    if turn.positions and shows_content and all(name in decoded for name in names):
        return
    raise UnsupportedChatTemplateError(
        f"the chat template changes assistant message {turn.index}: its trained tokens decode "
        f"to {decoded.strip()[:200]!r}, which is not the message as written"
    )


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    return [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []


def _example(input_ids: list[int], turns: list[_Turn], max_length: int | None) -> TokenizedExample:
    trained = {position for turn in turns for position in turn.positions}
    labels = [t if i in trained else IGNORE_INDEX for i, t in enumerate(input_ids)]
    # Like OpenAI, keep the start of a conversation that is too long and drop its end.
    n_tokens = len(input_ids)
    if max_length is not None and n_tokens > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    n_trained = sum(label != IGNORE_INDEX for label in labels)
    return TokenizedExample(input_ids, labels, n_trained, n_tokens)


def tokenize_completion(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
    *,
    max_length: int | None = None,
) -> TokenizedExample:
    """A legacy ``{"prompt", "completion"}`` example, for models served by ``/v1/completions``.

    The prompt is tokenized alone, as vLLM tokenizes a completions prompt (special tokens such as
    BOS included); the completion follows with the end-of-text token, and only those take loss.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True).input_ids)
    answer = list(tokenizer(completion, add_special_tokens=False).input_ids)
    if tokenizer.eos_token_id is not None:
        answer.append(tokenizer.eos_token_id)
    input_ids = prompt_ids + answer
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer
    n_tokens = len(input_ids)
    if max_length is not None and n_tokens > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    n_trained = sum(label != IGNORE_INDEX for label in labels)
    return TokenizedExample(input_ids, labels, n_trained, n_tokens)
