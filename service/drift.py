"""Prompt-length drift: a fine-tuned model's reference profile and where live prompts fall in it.

The reference is the distribution of prompt lengths in the model's training data, measured as vLLM
counts ``prompt_tokens`` for a request that would produce each trained assistant turn. Its bins are
fixed from that data (deciles), so live prompts are counted per bin with nothing but a comparison;
Prometheus recording rules turn both into the Population Stability Index (PSI): below 0.1 no drift,
0.1 to 0.25 moderate, above 0.25 significant.

A token sketch does the same for vocabulary: the training prompts' most frequent tokens get a bin
each and every other token falls into one of a few bins by its id, so live token counts per bin
(tokenized off the request path) against the training shares give a Jensen-Shannon distance.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BINS = 10
FLOOR = 1e-4  # shares are floored before the logarithm, as the recording rule does
TOP_TOKENS = 48  # the training prompts' most frequent tokens, a bin each
HASHED_BINS = 16  # every other token: bin TOP + id % HASHED_BINS


@dataclass(frozen=True)
class TokenSketch:
    """Token frequencies in fixed bins: ``top`` tokens first, then the hashed rest."""

    top: list[int]
    shares: list[float]
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {token: i for i, token in enumerate(self.top)})

    def bin_of(self, token: int) -> int:
        found = self._index.get(token)
        return found if found is not None else len(self.top) + token % HASHED_BINS

    def bin_counts(self, tokens: Iterable[int]) -> list[int]:
        counts = [0] * len(self.shares)
        for token in tokens:
            counts[self.bin_of(token)] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {"top": self.top, "shares": self.shares}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSketch:
        return cls([int(t) for t in data["top"]], [float(s) for s in data["shares"]])


def build_token_sketch(counts: Mapping[int, int], top: int = TOP_TOKENS) -> TokenSketch | None:
    """The sketch of the training prompts' token counts (token id -> occurrences)."""
    total = sum(counts.values())
    if total == 0:
        return None
    frequent = sorted(counts, key=lambda token: (-counts[token], token))[:top]
    empty = TokenSketch(frequent, [0.0] * (len(frequent) + HASHED_BINS))
    shares = [0.0] * len(empty.shares)
    for token, count in counts.items():
        shares[empty.bin_of(token)] += count / total
    return TokenSketch(frequent, shares)


def message_texts(messages: Iterable[Any]) -> list[str]:
    """The text a chat prompt carries: string contents and text parts, in order."""
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return texts


def request_texts(body: Mapping[str, Any]) -> list[str]:
    """The prompt text of a chat (``messages``) or legacy completions (``prompt``) request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return message_texts(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str)]
    return []


@dataclass(frozen=True)
class PromptProfile:
    """Bin edges (a prompt of length L falls in bin ``bisect_right(edges, L)``) and shares."""

    edges: list[int]
    shares: list[float]
    prompts: int
    shortest: int
    longest: int
    tokens: TokenSketch | None = None

    def bin_of(self, length: int) -> int:
        return bisect.bisect_right(self.edges, length)

    def outside(self, length: int) -> bool:
        """Longer or shorter than every prompt the model was trained on."""
        return length < self.shortest or length > self.longest

    def as_dict(self) -> dict[str, Any]:
        found = {
            "edges": self.edges,
            "shares": self.shares,
            "prompts": self.prompts,
            "shortest": self.shortest,
            "longest": self.longest,
        }
        if self.tokens is not None:
            found["tokens"] = self.tokens.as_dict()
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptProfile:
        tokens = data.get("tokens")  # absent in profiles stored before the token sketch
        return cls(
            [int(e) for e in data["edges"]],
            [float(s) for s in data["shares"]],
            int(data["prompts"]),
            int(data["shortest"]),
            int(data["longest"]),
            TokenSketch.from_dict(tokens) if tokens else None,
        )


def build_profile(
    lengths: Sequence[int], token_counts: Mapping[int, int] | None = None, bins: int = BINS
) -> PromptProfile | None:
    """Deciles of the training prompt lengths as bin edges, each bin's share of them, and the
    sketch of the prompts' tokens when their counts are given."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    cuts = {ordered[min(len(ordered) - 1, len(ordered) * i // bins)] for i in range(1, bins)}
    edges = sorted(cut for cut in cuts if cut > ordered[0])
    counts = [0] * (len(edges) + 1)
    for length in ordered:
        counts[bisect.bisect_right(edges, length)] += 1
    shares = [count / len(ordered) for count in counts]
    sketch = build_token_sketch(token_counts) if token_counts else None
    return PromptProfile(edges, shares, len(ordered), ordered[0], ordered[-1], sketch)


def psi(reference: Sequence[float], live_counts: Sequence[int]) -> float | None:
    """Population Stability Index of live bin counts against reference shares."""
    total = sum(live_counts)
    if total == 0:
        return None
    value = 0.0
    for expected, count in zip(reference, live_counts, strict=True):
        actual = max(count / total, FLOOR)
        expected = max(expected, FLOOR)
        value += (actual - expected) * math.log(actual / expected)
    return value


def js_distance(reference: Sequence[float], live_counts: Sequence[int]) -> float | None:
    """Jensen-Shannon distance (base 2: 0 the same, 1 nothing in common) of live bin counts
    against reference shares, as the recording rule computes it."""
    total = sum(live_counts)
    if total == 0:
        return None
    divergence = 0.0
    for expected, count in zip(reference, live_counts, strict=True):
        actual = count / total
        middle = (actual + expected) / 2
        for share in (actual, expected):
            if share > 0:
                divergence += share / 2 * math.log2(share / middle)
    return math.sqrt(max(divergence, 0.0))
