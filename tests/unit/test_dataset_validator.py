"""The validator of fine-tuning files: a table of malformed files, each with its code and words."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from service.datasets.validator import DatasetValidator, ValidationReport

USER = {"role": "user", "content": "What is the capital of Zorbia?"}
ANSWER = {"role": "assistant", "content": "Quillmark."}
GOOD = {"messages": [{"role": "system", "content": "Be brief."}, USER, ANSWER]}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup", "arguments": '{"city": "Quillmark"}'},
}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
PREFERENCE = {
    "input": {"messages": [USER]},
    "preferred_output": [ANSWER],
    "non_preferred_output": [{"role": "assistant", "content": "Paris."}],
}
BAD_LINE = 3  # where each malformed example sits among good ones


def line(value: object) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def with_messages(*messages: object, **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


def validate(data: bytes, chunk: int = 1 << 16, **options: Any) -> ValidationReport:
    options.setdefault("method", "supervised")
    options.setdefault("file_id", "file-abc")
    validator = DatasetValidator(**options)
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    return validator.finish()


def among_good(bad: object, n_good: int = 10, good: object = GOOD) -> bytes:
    lines = [line(good)] * n_good
    lines.insert(BAD_LINE - 1, line(bad))
    return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Case:
    data: bytes
    code: str
    words: str
    options: tuple[tuple[str, Any], ...] = ()


def bad_example(bad: object, words: str, message: int | None = None) -> Case:
    where = f"Example {BAD_LINE}" + (f", message {message}" if message else "")
    return Case(among_good(bad), "invalid_training_file", f"{where}: {words}")


CASES = {
    "invalid JSON": bad_example(b'{"messages": [', "not valid JSON"),
    "not UTF-8": bad_example(
        b'{"messages": "\xff"}', "the line is not valid UTF-8 (byte 0xff at position 15)"
    ),
    "JSON array": bad_example([1, 2], "expected a JSON object, got a JSON array"),
    "JSON string": bad_example("hello", "expected a JSON object, got a JSON string"),
    "unknown format": bad_example({"text": "hi"}, "unrecognized example; expected 'messages'"),
    "messages not a list": bad_example(
        {"messages": {"role": "user"}}, "'messages' must be a list of messages, got a JSON object"
    ),
    "messages empty": bad_example({"messages": []}, "'messages' is empty"),
    "message not an object": bad_example(
        with_messages("hi", ANSWER), "expected a message object, got a JSON string", 1
    ),
    "missing role": bad_example(
        with_messages({"content": "hi"}, ANSWER), "Discriminator 'role' is missing in value", 1
    ),
    "unknown role": bad_example(
        with_messages({"role": "bot", "content": "hi"}, ANSWER),
        "Input tag 'bot' found using 'role' does not match any of the expected tags",
        1,
    ),
    "user without content": bad_example(
        with_messages({"role": "user"}, ANSWER), "user message is missing 'content'", 1
    ),
    "content a number": bad_example(
        with_messages({"role": "user", "content": 7}, ANSWER),
        "'content' must be a string or a list of content parts, got a JSON number",
        1,
    ),
    "no assistant message": bad_example(with_messages(USER), "no assistant message"),
    "assistant with nothing to say": bad_example(
        with_messages(USER, {"role": "assistant"}),
        "assistant message needs 'content' or 'tool_calls'",
        2,
    ),
    "assistant empty content": bad_example(
        with_messages(USER, {"role": "assistant", "content": ""}),
        "assistant message has empty 'content' and no 'tool_calls'",
        2,
    ),
    "weight 2": bad_example(
        with_messages(USER, {**ANSWER, "weight": 2}), "'weight' must be 0 or 1, got 2", 2
    ),
    "weight 0.5": bad_example(
        with_messages(USER, {**ANSWER, "weight": 0.5}), "'weight' must be 0 or 1, got 0.5", 2
    ),
    "weight true": bad_example(
        with_messages(USER, {**ANSWER, "weight": True}), "'weight' must be 0 or 1, got true", 2
    ),
    "weight on a user message": bad_example(
        with_messages({**USER, "weight": 1}, ANSWER),
        "'weight' is only allowed on assistant messages, found on a user message",
        1,
    ),
    "every assistant weight 0": bad_example(
        with_messages(USER, {**ANSWER, "weight": 0}), "every assistant message has weight 0"
    ),
    "tool message without tool_call_id": bad_example(
        with_messages(
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "content": "1"},
            ANSWER,
        ),
        "tool message needs a string 'tool_call_id'",
        3,
    ),
    "tool_call_id matching no call": bad_example(
        with_messages(
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_9", "content": "1"},
            ANSWER,
        ),
        "'tool_call_id' 'call_9' does not match the id of any tool call",
        3,
    ),
    "tool_calls not a list": bad_example(
        with_messages(USER, {"role": "assistant", "tool_calls": CALL}),
        "'tool_calls' must be a list, got a JSON object",
        2,
    ),
    "tool call without id": bad_example(
        with_messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}),
        "tool call 1: 'id' must be a non-empty string",
        2,
    ),
    "tool call of another type": bad_example(
        with_messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}),
        "tool call 1: 'type' must be 'function', got 'code'",
        2,
    ),
    "tool call arguments an object": bad_example(
        with_messages(
            USER,
            {
                "role": "assistant",
                "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
            },
        ),
        "tool call 1: 'function'.arguments must be a string holding JSON",
        2,
    ),
    "tool call arguments not JSON": bad_example(
        with_messages(
            USER,
            {
                "role": "assistant",
                "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{city:"}}],
            },
        ),
        "tool call 1: 'function'.arguments is not valid JSON",
        2,
    ),
    "image on a text model": bad_example(
        with_messages(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            ANSWER,
        ),
        "content part 1: images ('image_url') are not supported; the base model takes text only",
        1,
    ),
    "audio part": bad_example(
        with_messages(
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "input_audio"}]},
            ANSWER,
        ),
        "content part 2: content part type 'input_audio' is not supported",
        1,
    ),
    "text part without text": bad_example(
        with_messages({"role": "user", "content": [{"type": "text"}]}, ANSWER),
        "content part 1: a text part needs a string 'text'",
        1,
    ),
    "empty list of parts": bad_example(
        with_messages({"role": "user", "content": []}, ANSWER),
        "'content' is an empty list of content parts",
        1,
    ),
    "tools not a list": bad_example(
        with_messages(USER, ANSWER, tools={"type": "function"}),
        "'tools' must be a list of tools, got a JSON object",
    ),
    "tool without a function name": bad_example(
        with_messages(USER, ANSWER, tools=[{"type": "function", "function": {}}]),
        "'tools' tool 1 needs a 'function' object with a string 'name'",
    ),
    "parallel_tool_calls a string": bad_example(
        with_messages(USER, ANSWER, parallel_tool_calls="no"),
        "'parallel_tool_calls' must be true or false, got a JSON string",
    ),
    "name not a string": bad_example(
        with_messages({**USER, "name": 5}, ANSWER), "'name' must be a string, got a JSON number", 1
    ),
    "function message without name": bad_example(
        with_messages(USER, {"role": "function", "content": "1"}, ANSWER),
        "function message needs a string 'name'",
        2,
    ),
    "mixed formats": bad_example(
        PREFERENCE,
        "the file mixes formats: this example is in the fine-tune-preference format, but "
        "example 1 is in the fine-tune-chat format",
    ),
    "line over the limit": Case(
        among_good(with_messages(USER, {**ANSWER, "content": "x" * 500})),
        "invalid_training_file",
        f"Example {BAD_LINE}: the line is longer than 300 bytes",
        (("max_line_bytes", 300),),
    ),
    "preference file in a supervised job": Case(
        among_good(PREFERENCE, good=PREFERENCE),
        "invalid_training_file",
        "Input file file-abc is in the fine-tune-preference format, but the specified "
        "fine-tuning job is not using 'dpo' as the training method (provided method=supervised).",
    ),
    "chat file in a dpo job": Case(
        among_good(GOOD),
        "invalid_training_file",
        "Input file file-abc is in the fine-tune-chat format, but the specified fine-tuning job "
        "is not using 'supervised' as the training method (provided method=dpo).",
        (("method", "dpo"),),
    ),
    "prompt/completion file in a dpo job": Case(
        among_good({"prompt": "2+2=", "completion": "4"}, good={"prompt": "a", "completion": "b"}),
        "invalid_training_file",
        "Input file file-abc is in the fine-tune-completion format, but the specified "
        "fine-tuning job is not using 'supervised' as the training method (provided method=dpo).",
        (("method", "dpo"),),
    ),
    "preference answers not one message": Case(
        among_good({**PREFERENCE, "preferred_output": [ANSWER, ANSWER]}, good=PREFERENCE),
        "invalid_training_file",
        f"Example {BAD_LINE}: 'preferred_output' must be a list holding exactly one assistant",
        (("method", "dpo"),),
    ),
    "completion empty": Case(
        among_good({"prompt": "a", "completion": ""}, good={"prompt": "a", "completion": "b"}),
        "invalid_training_file",
        f"Example {BAD_LINE}: 'completion' must be a non-empty string",
    ),
    "too few examples": Case(
        b"\n".join([line(GOOD)] * 7),
        "invalid_n_examples",
        "Training file has 7 example(s), but must have at least 10 examples",
    ),
    "empty file": Case(
        b"", "invalid_n_examples", "Training file is empty, but must have at least 10 examples"
    ),
    "only blank lines": Case(
        b"\n \n\t\r\n", "invalid_n_examples", "Training file is empty, but must have at least 10"
    ),
    "bad validation file": Case(
        among_good(with_messages(USER)),
        "invalid_validation_file",
        "The job failed due to an invalid validation file. Invalid file format. "
        f"Example {BAD_LINE}: no assistant message",
        (("param", "validation_file"),),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_fails_with_its_code_and_words(name: str) -> None:
    case = CASES[name]
    options = dict(case.options)

    error = validate(case.data, **options).error()

    assert error is not None
    assert error.code == case.code
    assert error.param == options.get("param", "training_file")
    assert case.words in error.message
    if case.code == "invalid_training_file":
        assert error.message.startswith(
            "The job failed due to an invalid training file. Invalid file format. "
        )


def test_the_table_holds_at_least_thirty_distinct_files() -> None:
    assert len({case.data for case in CASES.values()}) >= 30


def test_rich_valid_examples_pass() -> None:
    examples = [
        GOOD,
        with_messages({"role": "developer", "content": "Be brief."}, USER, ANSWER),
        with_messages(
            USER,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {**ANSWER, "weight": 1},
            tools=TOOLS,
            parallel_tool_calls=False,
        ),
        with_messages(USER, {**ANSWER, "weight": 0}, USER, ANSWER),
        with_messages({"role": "user", "content": [{"type": "text", "text": "hi"}]}, ANSWER),
        with_messages(
            USER,
            {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "ok"},
            ANSWER,
            functions=[{"name": "lookup"}],
        ),
        with_messages(
            {**USER, "name": "ada"}, {**ANSWER, "content": [{"type": "text", "text": "x"}]}
        ),
    ]
    data = b"\n".join(line(e) for e in examples * 2)

    report = validate(data)

    assert report.problems == [] and report.error() is None
    assert (report.n_examples, report.format) == (14, "fine-tune-chat")


def test_more_than_ten_problems_lists_the_first_ten_and_counts_all() -> None:
    data = b"\n".join([line(with_messages(USER))] * 12 + [line(GOOD)] * 3)

    report = validate(data)
    error = report.error()

    assert report.n_problems == 12 and len(report.problems) == 10
    assert error is not None
    assert "Example 10: no assistant" in error.message
    assert "Example 11:" not in error.message
    assert error.message.endswith("(12 problems in total; the first 10 are listed)")


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
def test_the_report_does_not_depend_on_how_the_file_is_chunked(chunk: int) -> None:
    data = b"\xef\xbb\xbf" + among_good(with_messages(USER)).replace(b"\n", b"\r\n") + b"\n\n  \n"

    report = validate(data, chunk=chunk)

    assert report.n_examples == 11
    assert [(p.line, p.detail[:20]) for p in report.problems] == [(3, "no assistant message")]


def test_a_long_line_is_refused_without_being_buffered() -> None:
    validator = DatasetValidator(max_line_bytes=10)
    validator.feed(line(GOOD)[:5])
    validator.feed(b"x" * 100)
    validator.feed(b"x" * 100)

    assert validator._pending_bytes <= 10
    validator.feed(b"\n" + line(GOOD))
    report = validator.finish()
    assert report.problems[0].line == 1 and "longer than 10 bytes" in report.problems[0].detail
    assert report.n_examples == 2


def test_tokens_are_counted_truncated_at_the_limit_and_summed() -> None:
    lengths = iter([100, 5000, 3000] + [10] * 7)
    report = validate(
        among_good(GOOD, n_good=9), count_tokens=lambda _: next(lengths), token_limit=2048
    )

    assert report.error() is None
    assert report.n_truncated == 2
    assert report.max_example_tokens == 5000
    assert report.total_tokens == 100 + 2048 + 2048 + 7 * 10


def test_tokens_are_not_counted_once_the_file_has_a_problem() -> None:
    counted: list[object] = []

    def count(example: dict[str, Any]) -> int:
        counted.append(example)
        return 1

    validate(among_good(with_messages(USER)), count_tokens=count)

    assert len(counted) == BAD_LINE - 1


def test_tokens_are_only_counted_for_the_jobs_format() -> None:
    counted: list[object] = []
    validate(among_good(PREFERENCE, good=PREFERENCE), count_tokens=lambda e: counted.append(e) or 1)

    assert counted == []


def test_the_upload_check_marks_structural_problems_only() -> None:
    report = validate(among_good(with_messages(USER)), method=None)
    assert report.problems and report.first_structural is None

    report = validate(among_good(b"[1]"), method=None)
    assert report.first_structural is not None and report.first_structural.line == BAD_LINE


def test_memory_stays_flat_over_a_large_file() -> None:
    block = b"\n".join(line(GOOD) for _ in range(1000)) + b"\n"
    validator = DatasetValidator(method="supervised")
    tracemalloc.start()
    try:
        validator.feed(block)  # warm up: the first chunk's allocations are not growth
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(200):  # ~20 MB in 100 KB chunks
            validator.feed(block)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()

    assert validator.finish().n_examples == 201_000
    assert grown < 64 * 1024


def test_a_prompt_completion_file_trains_in_a_supervised_job_only() -> None:
    legacy = {"prompt": "2+2=", "completion": " 4"}
    counted: list[object] = []

    def count(example: dict[str, Any]) -> int:
        counted.append(example)
        return 3

    supervised = validate(among_good(legacy, good=legacy), count_tokens=count, method="supervised")
    chat_in_dpo = validate(among_good(GOOD), count_tokens=count, method="dpo")

    assert supervised.error() is None and supervised.format == "fine-tune-completion"
    assert len(counted) == 11 and supervised.total_tokens == 33
    assert chat_in_dpo.error() is not None  # and its chat examples never reached the counter
    assert len(counted) == 11
