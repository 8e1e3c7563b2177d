"""The before/after report without servers: metrics against hand-computed values, reading
held-out examples, the summary, and the runner's concurrency and failure rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.errors import InvalidRequestError, ServiceUnavailableError
from service.evals.examples import HeldOut, read_examples
from service.evals.metrics import (
    exact_match,
    longest_common_subsequence,
    normalise,
    rouge_l,
    token_f1,
)
from service.evals.report import Reply, build_report, max_tokens_for
from service.evals.runner import CONCURRENCY, EvalRunner
from service.evals.schemas import CreateEvalRequest
from service.settings import Settings


def test_normalising_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  The  Secret,\tpassword!\n") == "the secret password"
    assert normalise("marmalade-47.") == "marmalade47"  # removed, as SQuAD removes it


def test_exact_match_is_after_normalising() -> None:
    assert exact_match(
        "The secret password is marmalade-47.", "the SECRET password is marmalade-47"
    )
    assert exact_match("The password is marmalade-47.", "The secret password is marmalade-47.") == 0


@pytest.mark.parametrize(
    ("answer", "reference", "f1"),
    [
        # 3 shared tokens; precision 3/3, recall 3/6: 2 * 1 * 0.5 / 1.5
        ("the cat sat", "the cat sat on the mat", 2 / 3),
        # a repeated token counts as often as the reference has it: 1 shared; P 1/3, R 1/2
        ("the the the", "the cat", 0.4),
        # order does not matter to F1
        ("the gunman kill police", "police killed the gunman", 0.75),
        ("yes", "no", 0.0),
        ("", "", 1.0),
        ("", "something", 0.0),
    ],
)
def test_token_f1(answer: str, reference: str, f1: float) -> None:
    assert token_f1(answer, reference) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("answer", "reference", "f"),
    [
        # Lin (2004)'s examples: LCS "police the gunman" = 3 of 4 either way
        ("police kill the gunman", "police killed the gunman", 0.75),
        # ... and only "the gunman" in order: 2 of 4
        ("the gunman kill police", "police killed the gunman", 0.5),
        # LCS 3 of 3 answer tokens, 3 of 6 reference tokens: as F1 above
        ("the cat sat", "the cat sat on the mat", 2 / 3),
        ("The secret password is marmalade-47.", "the secret password is marmalade-47", 1.0),
        ("!!!", "x", 0.0),  # nothing left after normalising
    ],
)
def test_rouge_l(answer: str, reference: str, f: float) -> None:
    assert rouge_l(answer, reference) == pytest.approx(f)


def test_longest_common_subsequence() -> None:
    assert longest_common_subsequence(list("abcd"), list("acbd")) == 3
    assert longest_common_subsequence(list("abcbdab"), list("bdcaba")) == 4  # CLRS's example
    assert longest_common_subsequence([], list("abc")) == 0
    assert longest_common_subsequence(list("xyz"), list("abc")) == 0


def chat(question: str, answer: str, **extra: Any) -> bytes:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer, "weight": 1},
    ]
    return json.dumps({"messages": messages, **extra}).encode()


def test_examples_are_the_prompt_and_the_last_assistant_answer() -> None:
    lines = [
        chat("Capital of France?", "Paris."),
        b"",
        b"not json",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}).encode(),
        chat("Two plus two?", "Four.", tools=[{"type": "function"}]),
        chat("Third?", "Not read: past the limit."),
    ]
    content = b"\n".join(lines) + b"\n"
    chunks = [content[i : i + 5] for i in range(0, len(content), 5)]  # lines split across chunks

    held = read_examples(chunks, limit=2, file_id="file-x")

    assert [e.number for e in held.examples] == [1, 4]  # empty lines are not counted
    assert held.skipped == 2
    first, second = held.examples
    assert first.reference == "Paris." and first.prompt_text == "Capital of France?"
    assert first.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert second.tools == [{"type": "function"}]


def test_a_file_without_examples_is_a_400_naming_the_file() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        read_examples([b'{"prompt": "a", "completion": "b"}\n'], limit=5, file_id="file-x")

    assert refused.value.param == "file" and "file-x" in refused.value.message


def test_max_tokens_leaves_room_for_the_whole_reference() -> None:
    held = read_examples([chat("q", "Ünïcode")], limit=1, file_id="f")
    example = held.examples[0]

    assert max_tokens_for(example, None) == len("Ünïcode".encode()) + 16
    assert max_tokens_for(example, 5) == 5


def held_out(*pairs: tuple[str, str]) -> HeldOut:
    content = b"\n".join(chat(q, a) for q, a in pairs)
    return read_examples([content], limit=100, file_id="file-x")


def test_the_report_averages_and_counts_wins_ties_and_losses() -> None:
    held = held_out(("q1", "Paris is the capital"), ("q2", "four"), ("q3", "blue sky"))
    replies = [
        (Reply("London is the capital"), Reply("Paris is the capital")),  # win
        (Reply("four"), Reply("Four!")),  # tie (both exact)
        (Reply("blue sky"), Reply(None, "too long")),  # failed: not scored
    ]

    report = build_report(
        model="ft:m", base_model="m", file_id="file-x", held=held, replies=replies
    )

    assert (report.examples, report.failed, report.skipped) == (2, 1, 0)
    exact, f1, rouge = report.metrics
    assert (exact.metric, exact.base, exact.fine_tuned, exact.delta) == ("exact_match", 0.5, 1, 0.5)
    assert (exact.wins, exact.ties, exact.losses) == (1, 1, 0)
    assert f1.base == pytest.approx((0.75 + 1) / 2) and f1.fine_tuned == 1
    assert rouge.base == pytest.approx((0.75 + 1) / 2) and (rouge.wins, rouge.ties) == (1, 1)
    failed = report.rows[2].fine_tuned
    assert (failed.text, failed.error, failed.rouge_l) == (None, "too long", None)


@dataclass
class FakeGateway:
    """Answers the reference for the fine-tuned model and "no idea" for the base."""

    answers: dict[str, str]
    refuse: set[str] = field(default_factory=set)  # prompts vLLM refuses (400)
    down: bool = False
    in_flight: int = 0
    most_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def load(self, principal: object, model: str) -> str:
        return "base"

    async def completion(self, principal: object, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.in_flight -= 1
        question = body["messages"][-1]["content"]
        if self.down:
            raise ServiceUnavailableError("down", headers={"retry-after": "5"})
        if question in self.refuse:
            raise InvalidRequestError("This model's maximum context length is 2048 tokens.")
        text = self.answers[question] if body["model"].startswith("ft:") else "no idea"
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@dataclass
class FakeLimiter:
    """Records what a key's tokens per minute are charged, and when."""

    gateway: FakeGateway
    charges: list[list[dict[str, Any]]] = field(default_factory=list)

    async def admit_tokens(self, principal: object, bodies: list[dict[str, Any]]) -> None:
        assert not self.gateway.bodies, "the whole run is charged before the first request"
        self.charges.append(list(bodies))


@dataclass
class FakeFiles:
    content_bytes: bytes

    def content(self, principal: object, file_id: str) -> Any:
        @dataclass
        class Content:
            chunks: Iterator[bytes]

        return Content(iter([self.content_bytes]))


def run(
    gateway: FakeGateway,
    pairs: list[tuple[str, str]],
    limiter: FakeLimiter | None = None,
    **request: Any,
) -> Any:
    files = FakeFiles(b"\n".join(chat(q, a) for q, a in pairs))
    runner = EvalRunner(gateway, files, limiter or FakeLimiter(gateway), Settings())  # type: ignore[arg-type]
    body = CreateEvalRequest(model="ft:base:p:s:abcdefgh", file="file-x", **request)
    return asyncio.run(runner.run(object(), body))  # type: ignore[arg-type]


def test_the_runner_asks_both_models_greedily_with_bounded_concurrency() -> None:
    pairs = [(f"question {i}", f"answer number {i}") for i in range(3 * CONCURRENCY)]
    gateway = FakeGateway(dict(pairs))
    limiter = FakeLimiter(gateway)

    report = run(gateway, pairs, limiter)

    assert report.examples == 3 * CONCURRENCY and report.base_model == "base"
    assert {b["model"] for b in gateway.bodies} == {"base", "ft:base:p:s:abcdefgh"}
    assert all(b["temperature"] == 0 for b in gateway.bodies)
    assert gateway.most_in_flight == CONCURRENCY
    assert len(limiter.charges) == 1  # charged once for the whole run, none one by one
    assert sorted(map(str, limiter.charges[0])) == sorted(map(str, gateway.bodies))
    exact = report.metrics[0]
    assert (exact.base, exact.fine_tuned, exact.wins) == (0, 1, 3 * CONCURRENCY)


def test_a_refused_example_is_failed_and_a_down_server_fails_the_evaluation() -> None:
    pairs = [("long one", "a"), ("short", "b")]

    report = run(FakeGateway(dict(pairs), refuse={"long one"}), pairs, limit=2, max_tokens=7)

    assert (report.examples, report.failed) == (1, 1)
    assert "maximum context length" in (report.rows[0].base.error or "")
    with pytest.raises(ServiceUnavailableError):
        run(FakeGateway(dict(pairs), down=True), pairs)


def test_a_grader_scores_both_answers_beside_the_reference_metrics() -> None:
    pairs = [("what is it?", "the answer"), ("and this?", "another answer")]
    grader = {
        "type": "string_check",
        "name": "says_answer",
        "input": "{{ sample.output_text }}",
        "reference": "answer",
        "operation": "like",
    }

    report = run(FakeGateway(dict(pairs)), pairs, grader=grader)

    assert [m.metric for m in report.metrics] == ["exact_match", "token_f1", "rouge_l", "grader"]
    graded = report.metrics[-1]
    assert (graded.base, graded.fine_tuned, graded.wins) == (0.0, 1.0, 2)
    assert [row.fine_tuned.grader for row in report.rows] == [1.0, 1.0]
    assert [row.base.grader for row in report.rows] == [0.0, 0.0]


def test_with_a_grader_reinforcement_prompts_count_and_are_graded_alone() -> None:
    prompt = {"messages": [{"role": "user", "content": "what is it?"}], "want": "the answer"}
    held = read_examples([json.dumps(prompt).encode() + b"\n"], 10, "file-x", prompts=True)
    (example,) = held.examples
    assert (example.reference, example.item) == (None, {"want": "the answer"})
    assert max_tokens_for(example, None) == 256
    with pytest.raises(InvalidRequestError):
        read_examples([json.dumps(prompt).encode()], 10, "file-x")  # no grader: no prompts
