"""Scores answers against references and sums them up: means and win/tie/loss per metric."""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.evals.examples import Example, HeldOut
from service.evals.metrics import METRICS, Scores
from service.evals.schemas import Answer, EvalReport, EvalRow, MetricSummary

MAX_TOKENS_MARGIN = 16
MAX_TOKENS_CAP = 1024
TIE = 1e-9


@dataclass(frozen=True)
class Reply:
    """What one model said to one example: its text, or why the request was refused."""

    text: str | None
    error: str | None = None


def max_tokens_for(example: Example, fixed: int | None) -> int:
    """``fixed``, or room for the whole reference: a token never covers less than a byte."""
    if fixed is not None:
        return fixed
    return min(len(example.reference.encode()) + MAX_TOKENS_MARGIN, MAX_TOKENS_CAP)


def answer(reply: Reply, reference: str) -> Answer:
    if reply.text is None:
        return Answer(text=None, error=reply.error, exact_match=None, token_f1=None, rouge_l=None)
    scores = Scores.of(reply.text, reference)
    return Answer(text=reply.text, **{m: scores.get(m) for m in METRICS})


def build_report(
    *,
    model: str,
    base_model: str,
    file_id: str,
    held: HeldOut,
    replies: list[tuple[Reply, Reply]],
) -> EvalReport:
    """``replies``: (base, fine-tuned) per example of ``held``, in order."""
    rows = [
        EvalRow(
            example=e.number,
            prompt=e.prompt_text,
            reference=e.reference,
            base=answer(base, e.reference),
            fine_tuned=answer(tuned, e.reference),
        )
        for e, (base, tuned) in zip(held.examples, replies, strict=True)
    ]
    scored = [r for r in rows if r.base.text is not None and r.fine_tuned.text is not None]
    return EvalReport(
        created_at=int(time.time()),
        model=model,
        base_model=base_model,
        file=file_id,
        examples=len(scored),
        failed=len(rows) - len(scored),
        skipped=held.skipped,
        metrics=[summary(metric, scored) for metric in METRICS],
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
