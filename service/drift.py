"""Prompt-length drift: a fine-tuned model's reference profile and where live prompts fall in it.

The reference is the distribution of prompt lengths in the model's training data, measured as vLLM
counts ``prompt_tokens`` for a request that would produce each trained assistant turn. Its bins are
fixed from that data (deciles), so live prompts are counted per bin with nothing but a comparison;
Prometheus recording rules turn both into the Population Stability Index (PSI): below 0.1 no drift,
0.1 to 0.25 moderate, above 0.25 significant.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BINS = 10
FLOOR = 1e-4  # shares are floored before the logarithm, as the recording rule does


@dataclass(frozen=True)
class PromptProfile:
    """Bin edges (a prompt of length L falls in bin ``bisect_right(edges, L)``) and shares."""

    edges: list[int]
    shares: list[float]
    prompts: int
    shortest: int
    longest: int

    def bin_of(self, length: int) -> int:
        return bisect.bisect_right(self.edges, length)

    def outside(self, length: int) -> bool:
        """Longer or shorter than every prompt the model was trained on."""
        return length < self.shortest or length > self.longest

    def as_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges,
            "shares": self.shares,
            "prompts": self.prompts,
            "shortest": self.shortest,
            "longest": self.longest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptProfile:
        return cls(
            [int(e) for e in data["edges"]],
            [float(s) for s in data["shares"]],
            int(data["prompts"]),
            int(data["shortest"]),
            int(data["longest"]),
        )


def build_profile(lengths: Sequence[int], bins: int = BINS) -> PromptProfile | None:
    """Deciles of the training prompt lengths as bin edges, and each bin's share of them."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    cuts = {ordered[min(len(ordered) - 1, len(ordered) * i // bins)] for i in range(1, bins)}
    edges = sorted(cut for cut in cuts if cut > ordered[0])
    counts = [0] * (len(edges) + 1)
    for length in ordered:
        counts[bisect.bisect_right(edges, length)] += 1
    shares = [count / len(ordered) for count in counts]
    return PromptProfile(edges, shares, len(ordered), ordered[0], ordered[-1])


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
