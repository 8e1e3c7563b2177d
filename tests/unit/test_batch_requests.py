"""A batch input file's lines: what fails the whole batch (with line numbers), what runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.batches.requests import (
    MAX_ERRORS,
    BatchRequest,
    InputCheck,
    LineProblem,
    lines_of,
    parse_line,
    requests_of,
)

CHAT = "/v1/chat/completions"


def line(custom_id: str = "a", **changes: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]},
        **changes,
    }


def jsonl(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def test_lines_are_numbered_across_chunks_and_blank_lines_skipped() -> None:
    data = b'{"a": 1}\n\n  \n{"b": 2}\n{"c": 3}'
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert list(lines_of(chunks)) == [(1, b'{"a": 1}'), (4, b'{"b": 2}'), (5, b'{"c": 3}')]


def test_a_good_line_is_a_request() -> None:
    parsed = parse_line(7, json.dumps(line("x")).encode(), CHAT)
    assert isinstance(parsed, BatchRequest)
    assert (parsed.line, parsed.custom_id, parsed.model) == (7, "x", "tiny-chat")


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b"{not json", "invalid_json_line", None),
        (b"[1, 2]", "invalid_request", None),
        (json.dumps({k: v for k, v in line().items() if k != "custom_id"}).encode(),
         "missing_required_parameter", "custom_id"),
        (json.dumps(line(custom_id="")).encode(), "invalid_custom_id", "custom_id"),
        (json.dumps(line(method="GET")).encode(), "invalid_method", "method"),
        (json.dumps(line(url="/v1/completions")).encode(), "mismatched_url", "url"),
        (json.dumps(line(body=[1])).encode(), "invalid_body", "body"),
        (json.dumps(line(body={"messages": []})).encode(), "missing_model", "body.model"),
    ],
)  # fmt: skip
def test_a_bad_line_says_what_is_wrong_and_where(raw: bytes, code: str, param: str | None) -> None:
    problem = parse_line(3, raw, CHAT)
    assert isinstance(problem, LineProblem)
    assert (problem.code, problem.param, problem.line) == (code, param, 3)
    assert "3" in problem.message
    assert problem.as_dict() == {"code": code, "message": problem.message, "param": param,
                                 "line": 3}  # fmt: skip


def test_the_check_counts_requests_and_names_a_single_model() -> None:
    check = InputCheck(CHAT, max_requests=10)
    check.read([jsonl(line("a"), line("b"))])
    assert (check.total, check.problems, check.model) == (2, [], "tiny-chat")
    mixed = InputCheck(CHAT, max_requests=10)
    other = line("c")
    other["body"] = {**other["body"], "model": "ft:tiny-chat:p::abc"}
    mixed.read([jsonl(line("a"), other)])
    assert (mixed.total, mixed.model) == (2, None)  # several models: no batch model


def test_duplicate_ids_bad_lines_and_too_many_requests_fail_the_file() -> None:
    check = InputCheck(CHAT, max_requests=2)
    check.read([jsonl(line("a"), b"oops", line("a"), line("b"))])
    assert [(p.code, p.line) for p in check.problems] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("too_many_requests", None),
    ]


def test_an_empty_file_fails_and_problems_are_capped() -> None:
    empty = InputCheck(CHAT, max_requests=10)
    empty.read([b"\n\n"])
    assert [p.code for p in empty.problems] == ["empty_file"]
    noisy = InputCheck(CHAT, max_requests=10_000)
    noisy.read([b"x\n" * (MAX_ERRORS + 50)])
    assert len(noisy.problems) == MAX_ERRORS and noisy.problems[-1].line == MAX_ERRORS


def test_requests_of_yields_the_lines_to_send_in_order() -> None:
    sent = list(requests_of([jsonl(line("a"), line("b"))], CHAT))
    assert [(r.line, r.custom_id) for r in sent] == [(1, "a"), (2, "b")]
