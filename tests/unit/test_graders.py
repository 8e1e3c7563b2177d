"""The graders package without a server: templates, string_check, multi's formula, the model
graders against a scripted judge, and the configuration errors with their paths."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from graders import templates
from graders.config import GraderConfigError, SamplingParams, parse_grader
from graders.formula import Formula, FormulaError
from graders.grading import GradingServices, grade_batch
from graders.samples import JudgeError, JudgeReply, Sample, TokenUsage


def grade(grader: dict[str, Any], text: str, item: dict[str, Any] | None = None, **services: Any):
    (found,) = grade_batch(
        parse_grader(grader), [(Sample.from_text(text), item or {})], GradingServices(**services)
    )
    return found


def check(operation: str, given: str = "{{ sample.output_text }}", reference: str = "{{item.a}}"):
    return {
        "type": "string_check",
        "name": "check",
        "input": given,
        "reference": reference,
        "operation": operation,
    }


@pytest.mark.parametrize(
    ("operation", "text", "expected"),
    [
        ("eq", "Paris", 1.0),
        ("eq", "paris", 0.0),
        ("ne", "Paris", 0.0),
        ("ne", "Lyon", 1.0),
        ("like", "It is Paris.", 1.0),
        ("like", "It is paris.", 0.0),
        ("ilike", "IT IS PARIS", 1.0),
        ("ilike", "Lyon", 0.0),
    ],
)
def test_string_check_operations(operation: str, text: str, expected: float) -> None:
    assert grade(check(operation), text, {"a": "Paris"}).reward == expected


def test_like_treats_sql_wildcards_as_text() -> None:
    assert grade(check("like", reference="50%"), "about 50% of it", {}).reward == 1.0
    assert grade(check("like", reference="5_%"), "about 50% of it", {}).reward == 0.0


def test_templates_walk_json_paths_and_render_values_as_json() -> None:
    namespaces = {
        "item": {"truth": {"date": "2025-01-01", "tags": ["a", "b"]}, "n": 3},
        "sample": Sample.from_text('{"answer": {"city": "Oslo"}}').namespace(),
    }
    assert templates.render("{{item.truth.date}}", namespaces) == "2025-01-01"
    assert templates.render("{{ item.truth.tags[1] }}|{{item.n}}", namespaces) == "b|3"
    assert templates.render("{{ item.truth.tags }}", namespaces) == '["a","b"]'
    assert templates.render("{{ sample.output_json.answer.city }}", namespaces) == "Oslo"
    with pytest.raises(templates.TemplateError) as missing:
        templates.render("{{ item.truth.place }}", namespaces)
    assert missing.value.kind == "invalid_variable_error"
    assert "item.truth has no 'place'" in str(missing.value)


def test_a_missing_item_field_scores_zero_with_invalid_variable_error() -> None:
    found = grade(check("eq", reference="{{ item.label }}"), "x", {"other": "x"})
    assert found.reward == 0.0
    assert found.errors.invalid_variable_error
    assert found.errors.raised() == ["invalid_variable_error"]


def test_output_json_of_a_sample_that_is_not_json_is_a_sample_parse_error() -> None:
    grader = check("eq", given="{{ sample.output_json.city }}", reference="Oslo")
    assert grade(grader, '{"city": "Oslo"}').reward == 1.0
    found = grade(grader, "Oslo")
    assert (found.reward, found.errors.sample_parse_error) == (0.0, True)


def test_output_tools_and_choices_are_templated() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    sample = Sample.from_message({"role": "assistant", "content": None, "tool_calls": [call]})
    grader = parse_grader(
        check("eq", given="{{ sample.output_tools[0].function.name }}", reference="f")
    )
    (found,) = grade_batch(grader, [(sample, {})], GradingServices())
    assert found.reward == 1.0
    assert sample.namespace()["choices"][0]["message"]["tool_calls"] == [call]


@pytest.mark.parametrize(
    ("text", "scores", "expected"),
    [
        ("0.5 * a + 0.5 * b", {"a": 1, "b": 0}, 0.5),
        ("a ^ 2 ^ 3", {"a": 2}, 256.0),  # right-associative, as in mathematics
        ("-a ^ 2", {"a": 3}, -9.0),
        ("min(a, b, 0.2) + max(a)", {"a": 1, "b": 0.5}, 1.2),
        ("floor(2.7) + ceil(0.2) + abs(-1) + sqrt(4) + exp(0) + log(1)", {}, 7.0),
        ("(a + b) / 2", {"a": 1, "b": 0}, 0.5),
        ("1e-1 * 10 + .5", {}, 1.5),
    ],
)
def test_formula_evaluates_openais_grammar(
    text: str, scores: dict[str, float], expected: float
) -> None:
    assert math.isclose(Formula.parse(text, scores).evaluate(scores), expected)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("0.5 * a + a)", "unexpected ')'"),
        ("a +", "ends too early"),
        ("__import__(a)", "is not a function"),
        ("__import__('os')", 'unexpected "\'"'),
        ("a.real", "unexpected '.'"),
        ("c + a", "'c' is not a grader"),
        ("abs(a, a)", "takes one argument"),
        ("a ** 2", "unexpected '*'"),
    ],
)
def test_formula_refuses_what_is_not_the_grammar(text: str, complaint: str) -> None:
    with pytest.raises(FormulaError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        Formula.parse(text, {"a"})


def multi(graders: Any, formula: str) -> dict[str, Any]:
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula}


def test_multi_combines_sub_graders_by_key() -> None:
    graders = {
        "exact": check("eq"),
        "close": {
            "type": "text_similarity",
            "name": "close",
            "input": "{{sample.output_text}}",
            "reference": "{{item.a}}",
            "evaluation_metric": "fuzzy_match",
        },
    }
    found = grade(multi(graders, "0.25 * exact + 0.75 * close"), "Paris", {"a": "Paris"})
    assert found.reward == 1.0
    assert found.sub_rewards == {"exact": 1.0, "close": 1.0}
    found = grade(multi(graders, "0.25 * exact + 0.75 * close"), "Lyon", {"a": "Paris"})
    assert found.sub_rewards["exact"] == 0.0
    assert math.isclose(found.reward, 0.75 * found.sub_rewards["close"])


def test_multi_accepts_a_list_keyed_by_names_and_a_single_grader() -> None:
    sub = {**check("eq"), "name": "exact"}
    assert grade(multi([sub], "exact * 2"), "Paris", {"a": "Paris"}).reward == 2.0
    assert grade(multi(sub, "exact + 1"), "Lyon", {"a": "Paris"}).reward == 1.0


def test_a_division_by_zero_in_the_formula_scores_zero_with_an_error() -> None:
    found = grade(multi({"x": check("eq")}, "1 / x"), "Lyon", {"a": "Paris"})
    assert (found.reward, found.errors.formula_parse_error) == (0.0, True)


@pytest.mark.parametrize(
    ("grader", "param", "words"),
    [
        ("nothing", None, "must be an object"),
        ({"type": "bogus", "name": "x"}, "type", "Invalid grader type 'bogus'"),
        ({**check("eq"), "operation": "neq"}, "operation", "'eq', 'ne', 'like' or 'ilike'"),
        ({**check("eq"), "extra": 1}, "extra", "Extra inputs are not permitted"),
        ({k: v for k, v in check("eq").items() if k != "name"}, "name", "Field required"),
        ({**check("eq"), "input": "{{ output_text }}"}, "input", "not a template variable"),
        ({**check("eq"), "input": "{{ sample.text }}"}, "input", "not 'text'"),
        (
            {"type": "label_model", "name": "l", "model": "m", "input": [], "labels": ["a"]},
            "type",
            "only inside a multi grader",
        ),
        (multi({"x": check("eq")}, "x +"), "calculate_output", "ends too early"),
        (multi({"x": check("eq")}, "y"), "calculate_output", "'y' is not a grader"),
        (multi({"x y": check("eq")}, "1"), "graders.x y", "cannot be named"),
        (multi({"x": multi({}, "1")}, "x"), "graders.x.type", "cannot hold another"),
        (multi({"x": {**check("eq"), "operation": 3}}, "x"), "graders.x.operation", "Input"),
        (multi([{**check("eq"), "name": "not a key"}], "1"), "graders[0].name", "must be a name"),
        (
            {"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user"}]},
            "input[0].content",
            "Field required",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "range": [1, 0],
            },
            "range",
            "low < high",
        ),
        (
            multi(
                {
                    "l": {
                        "type": "label_model",
                        "name": "l",
                        "model": "m",
                        "input": [{"role": "user", "content": "x"}],
                        "labels": ["a", "b"],
                        "passing_labels": ["c"],
                    }
                },
                "l",
            ),
            "graders.l.passing_labels",
            "['c'] are not among labels",
        ),
        (
            {"type": "python", "name": "p", "source": "x" * (256 * 1024 + 1)},
            "source",
            "at most 262144 characters",
        ),
    ],
)
def test_bad_graders_name_the_field(grader: Any, param: str | None, words: str) -> None:
    with pytest.raises(GraderConfigError) as refused:
        parse_grader(grader)
    assert refused.value.param == param
    assert words in refused.value.message


class ScriptedJudge:
    """Answers every chat with the next scripted text, recording what it was asked."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, Any]] = []

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        response_format: dict[str, Any],
        sampling: SamplingParams | None,
    ) -> JudgeReply:
        self.asked.append({"model": model, "messages": messages, "format": response_format})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return JudgeReply(answer, TokenUsage(prompt_tokens=10, completion_tokens=4))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = {"cat": [1.0, 0.0], "kitten": [0.6, 0.8], "car": [0.0, 1.0]}
        return [vectors[text] for text in texts]


def score_model(**extra: Any) -> dict[str, Any]:
    return {
        "type": "score_model",
        "name": "judge",
        "model": "o4-mini",
        "input": [
            {"role": "developer", "content": "Grade the answer to {{ item.question }}."},
            {"role": "user", "content": [{"type": "input_text", "text": "{{sample.output_text}}"}]},
        ],
        **extra,
    }


def test_score_model_asks_the_judge_for_result_and_steps_and_clamps_to_range() -> None:
    judge = ScriptedJudge(json.dumps({"result": 7, "steps": []}), '{"result": -2, "steps": []}')
    found = grade(score_model(range=[0, 5]), "Oslo", {"question": "Norway?"}, judge=judge)
    assert found.reward == 5.0
    assert found.token_usage == {"o4-mini": TokenUsage(10, 4)}
    assert grade(score_model(), "x", {"question": "q"}, judge=judge).reward == 0.0
    asked = judge.asked[0]
    assert asked["messages"] == [
        {"role": "system", "content": "Grade the answer to Norway?."},
        {"role": "user", "content": "Oslo"},
    ]
    schema = asked["format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["result", "steps"]
    assert schema["properties"]["result"] == {"type": "number"}


def test_a_verdict_cut_off_after_its_result_still_counts() -> None:
    judge = ScriptedJudge('{"result": 0.8, "steps": [{"description": "the ans')
    assert grade(score_model(), "x", {"question": "q"}, judge=judge).reward == 0.8


@pytest.mark.parametrize(
    ("answer", "flag"),
    [
        ("no json at all", "model_grader_parse_error"),
        ('{"result": "high", "steps": []}', "model_grader_parse_error"),
        (JudgeError("o4-mini: the model server is down"), "model_grader_server_error"),
    ],
)
def test_a_judge_that_fails_scores_zero_with_its_flag(answer: str | Exception, flag: str) -> None:
    found = grade(score_model(), "x", {"question": "q"}, judge=ScriptedJudge(answer))
    assert found.reward == 0.0
    assert found.errors.raised() == [flag]


def test_label_model_passes_on_passing_labels_inside_multi() -> None:
    label = {
        "type": "label_model",
        "name": "tone",
        "model": "gpt-4o-2024-08-06",
        "input": [{"role": "user", "content": "Tone of: {{ sample.output_text }}"}],
        "labels": ["positive", "neutral", "negative"],
        "passing_labels": ["positive", "neutral"],
    }
    judge = ScriptedJudge('{"result": "neutral", "steps": []}', '{"result": "angry"}')
    found = grade(multi({"tone": label}, "tone"), "fine", judge=judge)
    assert (found.reward, found.sub_rewards) == (1.0, {"tone": 1.0})
    assert judge.asked[0]["format"]["json_schema"]["schema"]["properties"]["result"] == {
        "type": "string",
        "enum": ["positive", "neutral", "negative"],
    }
    assert grade(multi({"tone": label}, "tone"), "x", judge=judge).errors.model_grader_parse_error


def test_cosine_uses_the_judges_embeddings() -> None:
    grader = {
        "type": "text_similarity",
        "name": "cos",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.ref }}",
        "evaluation_metric": "cosine",
    }
    judge = ScriptedJudge()
    assert grade(grader, "cat", {"ref": "cat"}, judge=judge).reward == pytest.approx(1.0)
    assert grade(grader, "cat", {"ref": "kitten"}, judge=judge).reward == pytest.approx(0.6)
    assert grade(grader, "cat", {"ref": "car"}, judge=judge).reward == 0.0
