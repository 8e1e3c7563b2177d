"""Scores answers against references and sums them up: means and win/tie/loss per metric."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service.evals.examples import Example, HeldOut
from service.evals.metrics import METRICS, Scores
from service.evals.schemas import Answer, EvalReport, EvalRow, MetricSummary

MAX_TOKENS_MARGIN = 16
MAX_TOKENS_CAP = 1024
PROMPT_MAX_TOKENS = 256  # an answer to a prompt without a reference
TIE = 1e-9


@dataclass(frozen=True)
class Reply:
    """What one model said to one example: its text, or why the request was refused."""

    text: str | None
    error: str | None = None
    message: dict[str, Any] | None = None  # the assistant message (a grader reads its tools)


def max_tokens_for(example: Example, fixed: int | None) -> int:
    """``fixed``, or room for the whole reference: a token never covers less than a byte."""
    if fixed is not None:
        return fixed
    if example.reference is None:
        return PROMPT_MAX_TOKENS
    return min(len(example.reference.encode()) + MAX_TOKENS_MARGIN, MAX_TOKENS_CAP)


def answer(reply: Reply, reference: str | None, grade: float | None = None) -> Answer:
    if reply.text is None:
        return Answer(text=None, error=reply.error, exact_match=None, token_f1=None, rouge_l=None)
    if reference is None:
        return Answer(text=reply.text, exact_match=None, token_f1=None, rouge_l=None, grader=grade)
    scores = Scores.of(reply.text, reference)
    return Answer(text=reply.text, **{m: scores.get(m) for m in METRICS}, grader=grade)


def build_report(
    *,
    model: str,
    base_model: str,
    file_id: str,
    held: HeldOut,
    replies: list[tuple[Reply, Reply]],
    grades: list[tuple[float | None, float | None]] | None = None,
) -> EvalReport:
    """``replies``: (base, fine-tuned) per example of ``held``, in order; ``grades``: the
    grader's rewards of the same, when the request had a grader."""
    graded = grades or [(None, None)] * len(replies)
    rows = [
        EvalRow(
            example=e.number,
            prompt=e.prompt_text,
            reference=e.reference,
            base=answer(base, e.reference, base_grade),
            fine_tuned=answer(tuned, e.reference, tuned_grade),
        )
        for e, (base, tuned), (base_grade, tuned_grade) in zip(
            held.examples, replies, graded, strict=True
        )
    ]
    scored = [r for r in rows if r.base.text is not None and r.fine_tuned.text is not None]
    referenced = [r for r in scored if r.reference is not None]
    metrics = [summary(metric, referenced) for metric in METRICS] if referenced else []
    if grades is not None:
        metrics.append(summary("grader", scored))
    return EvalReport(
        created_at=int(time.time()),
        model=model,
        base_model=base_model,
        file=file_id,
        examples=len(scored),
        failed=len(rows) - len(scored),
        skipped=held.skipped,
        metrics=metrics,
        rows=rows,
    )


def summary(metric: str, rows: list[EvalRow]) -> MetricSummary:
    pairs = [(_score(r.base, metric), _score(r.fine_tuned, metric)) for r in rows]
    n = max(len(pairs), 1)
    base = sum(b for b, _ in pairs) / n
    tuned = sum(t for _, t in pairs) / n
    return MetricSummary(
        metric=metric,
        base=base,
        fine_tuned=tuned,
        delta=tuned - base,
        wins=sum(t > b + TIE for b, t in pairs),
        ties=sum(abs(t - b) <= TIE for b, t in pairs),
        losses=sum(t < b - TIE for b, t in pairs),
    )


def _score(answer: Answer, metric: str) -> float:
    value = getattr(answer, metric)
    assert isinstance(value, float)
    return value
