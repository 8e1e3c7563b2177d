"""Grading: any grader over a batch of (sample, item) pairs, with OpenAI's reward and metadata.

One call grades many pairs so that python graders start one sandbox per batch and judge models
are asked concurrently; a pair that cannot be graded scores 0 and says why in its error flags,
as OpenAI's ``metadata.errors`` does, instead of failing the batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

from graders import model_graders, string_check, templates, text_similarity
from graders.config import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from graders.formula import FormulaError
from graders.python_grader import run_python_grader
from graders.python_sandbox import SandboxLimits
from graders.samples import Judge, JudgeError, Sample, TokenUsage

Case = tuple[Sample, Mapping[str, Any]]


@dataclass
class ErrorFlags:
    """OpenAI's ``metadata.errors``: every flag present, true where something went wrong."""

    formula_parse_error: bool = False
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False
    invalid_variable_error: bool = False
    other_error: bool = False
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    model_grader_server_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_server_error_details: str | None = None

    def merge(self, other: ErrorFlags) -> None:
        for flag in fields(self):
            mine, theirs = getattr(self, flag.name), getattr(other, flag.name)
            if theirs and not mine:
                setattr(self, flag.name, theirs)

    def raised(self) -> list[str]:
        """The boolean flags that are set."""
        return [f.name for f in fields(self) if getattr(self, f.name) is True]

    def as_dict(self) -> dict[str, Any]:
        return {flag.name: getattr(self, flag.name) for flag in fields(self)}


@dataclass
class Grade:
    """One pair's grade: ``reward`` and what OpenAI reports beside it."""

    reward: float
    errors: ErrorFlags = field(default_factory=ErrorFlags)
    execution_time: float = 0.0
    sub_rewards: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, TokenUsage] = field(default_factory=dict)  # per judge model


@dataclass(frozen=True)
class GradingServices:
    """What graders may use beyond their inputs: the judge (model graders and ``cosine``), the
    python sandbox's limits, and how many judge calls run at once."""

    judge: Judge | None = None
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    judge_concurrency: int = 8


def grade_batch(grader: Grader, cases: Sequence[Case], services: GradingServices) -> list[Grade]:
    """Each case's grade, in order."""
    if not isinstance(grader, MultiGrader):
        return _grade_all(grader, cases, services)
    by_key = {key: _grade_all(sub, cases, services) for key, sub in grader.graders.items()}
    formula = grader.formula()
    grades = []
    for index in range(len(cases)):
        parts = {key: grades_[index] for key, grades_ in by_key.items()}
        combined = Grade(reward=0.0, sub_rewards={k: g.reward for k, g in parts.items()})
        for part in parts.values():
            combined.errors.merge(part.errors)
            combined.execution_time += part.execution_time
            for model, usage in part.token_usage.items():
                combined.token_usage[model] = combined.token_usage.get(model, TokenUsage()) + usage
        try:
            combined.reward = _finite(formula.evaluate(combined.sub_rewards))
        except (ArithmeticError, ValueError, FormulaError):
            combined.errors.formula_parse_error = True
        grades.append(combined)
    return grades


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"the formula gave {value}")
    return value


def _grade_all(grader: Any, cases: Sequence[Case], services: GradingServices) -> list[Grade]:
    if isinstance(grader, PythonGrader):
        return _grade_python(grader, cases, services.sandbox)
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        judge = _needs_judge(services)
        with ThreadPoolExecutor(max_workers=max(1, services.judge_concurrency)) as pool:
            return list(pool.map(lambda case: _grade_one(grader, case, judge), cases))
    if isinstance(grader, TextSimilarityGrader) and grader.evaluation_metric == "cosine":
        return _grade_cosine(grader, cases, _needs_judge(services))
    return [_grade_one(grader, case, None) for case in cases]


def _needs_judge(services: GradingServices) -> Judge:
    if services.judge is None:
        raise RuntimeError("this grader needs a judge and none was given")
    return services.judge


def _namespaces(case: Case) -> dict[str, Any]:
    sample, item = case
    return {"sample": sample.namespace(), "item": item}


def _grade_one(grader: Any, case: Case, judge: Judge | None) -> Grade:
    started = time.perf_counter()
    grade = Grade(reward=0.0)
    try:
        if isinstance(grader, StringCheckGrader):
            grade.reward = string_check.score(grader, _namespaces(case))
        elif isinstance(grader, TextSimilarityGrader):
            grade.reward = text_similarity.similarity(
                grader.evaluation_metric,
                templates.render(grader.input, _namespaces(case)),
                templates.render(grader.reference, _namespaces(case)),
            )
        else:
            assert judge is not None
            verdict = model_graders.judge(grader, _namespaces(case), judge)
            grade.reward = verdict.reward
            grade.token_usage[grader.model] = verdict.usage
            if verdict.error:
                setattr(grade.errors, verdict.error, True)
                if verdict.error == "model_grader_server_error":
                    grade.errors.model_grader_server_error_details = verdict.details
    except templates.TemplateError as error:
        setattr(grade.errors, error.kind, True)
    grade.execution_time = time.perf_counter() - started
    return grade


def _grade_python(
    grader: PythonGrader, cases: Sequence[Case], limits: SandboxLimits
) -> list[Grade]:
    calls = [(sample.namespace(), item) for sample, item in cases]
    grades = []
    for outcome in run_python_grader(grader.source, calls, limits):
        grade = Grade(reward=outcome.reward, execution_time=outcome.execution_time)
        if outcome.runtime_error is not None:
            grade.errors.python_grader_runtime_error = True
            grade.errors.python_grader_runtime_error_details = outcome.runtime_error
        if outcome.server_error is not None:
            grade.errors.python_grader_server_error = True
            grade.errors.python_grader_server_error_type = outcome.server_error
        grades.append(grade)
    return grades


def _grade_cosine(grader: TextSimilarityGrader, cases: Sequence[Case], judge: Judge) -> list[Grade]:
    """Cosine similarity of the two texts' embeddings, clamped to [0, 1]."""
    grades = [Grade(reward=0.0) for _ in cases]
    pairs: list[tuple[int, str, str]] = []
    for index, case in enumerate(cases):
        try:
            namespaces = _namespaces(case)
            pairs.append(
                (
                    index,
                    templates.render(grader.input, namespaces),
                    templates.render(grader.reference, namespaces),
                )
            )
        except templates.TemplateError as error:
            setattr(grades[index].errors, error.kind, True)
    if not pairs:
        return grades
    started = time.perf_counter()
    try:
        vectors = judge.embed([text for _, a, b in pairs for text in (a, b)])
    except JudgeError as error:
        for index, _, _ in pairs:
            grades[index].errors.other_error = True
            grades[index].errors.model_grader_server_error_details = str(error)
        return grades
    each = (time.perf_counter() - started) / len(pairs)
    for position, (index, _, _) in enumerate(pairs):
        grades[index].reward = max(
            0.0, min(1.0, _cosine(*vectors[2 * position : 2 * position + 2]))
        )
        grades[index].execution_time = each
    return grades


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def mean_reward(grades: Sequence[Grade]) -> float:
    return sum(g.reward for g in grades) / len(grades) if grades else 0.0


Progress = Callable[[int], None]
