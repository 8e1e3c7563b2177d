"""Answer-vs-reference scores: exact match, token F1 (SQuAD-style) and ROUGE-L F, all in [0, 1].

Both texts are normalised the same way first: Unicode NFKC, lower case, punctuation removed
(as SQuAD's evaluation script does, but without dropping English articles, so any language
scores alike) and runs of whitespace collapsed; tokens are the words between whitespace.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

METRICS = ("exact_match", "token_f1", "rouge_l")


def normalise(text: str) -> str:
    lowered = unicodedata.normalize("NFKC", text).lower()
    kept = "".join(c for c in lowered if not unicodedata.category(c).startswith("P"))
    return " ".join(kept.split())


def tokens(text: str) -> list[str]:
    return normalise(text).split()


def exact_match(answer: str, reference: str) -> float:
    return float(normalise(answer) == normalise(reference))


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of the share of the answer's tokens found in the reference (precision) and
    of the reference's tokens found in the answer (recall), counting repeats as SQuAD does."""
    said, wanted = tokens(answer), tokens(reference)
    if not said or not wanted:
        return float(said == wanted)
    shared = sum((Counter(said) & Counter(wanted)).values())
    return _f1(shared, len(said), len(wanted))


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common token subsequence, as precision and recall."""
    said, wanted = tokens(answer), tokens(reference)
    if not said or not wanted:
        return float(said == wanted)
    return _f1(longest_common_subsequence(said, wanted), len(said), len(wanted))


def longest_common_subsequence(a: list[str], b: list[str]) -> int:
    """Length of the LCS, one row of the dynamic programme at a time (O(len(b)) memory)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
        previous = row
    return previous[-1]


def _f1(overlap: int, said: int, wanted: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / said, overlap / wanted
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Scores:
    exact_match: float
    token_f1: float
    rouge_l: float

    @classmethod
    def of(cls, answer: str, reference: str) -> Scores:
        return cls(
            exact_match(answer, reference), token_f1(answer, reference), rouge_l(answer, reference)
        )

    def get(self, metric: str) -> float:
        value: float = getattr(self, metric)
        return value
