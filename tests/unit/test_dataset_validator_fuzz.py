"""Fuzzing the validator: random bytes and random JSON never crash it, and it always decides."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.datasets import fast_chat
from service.datasets.checks import check_chat
from service.datasets.validator import DatasetValidator

KEYS = [
    "messages", "role", "content", "weight", "tool_calls", "tool_call_id", "id", "type",
    "function", "name", "arguments", "tools", "parameters", "parallel_tool_calls", "functions",
    "function_call", "text", "image_url", "url", "input", "preferred_output",
    "non_preferred_output", "prompt", "completion",
]  # fmt: skip
WORDS = ["system", "user", "assistant", "tool", "function", "developer", "text", "image_url", "{}"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(WORDS),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=30,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(data: bytes, chunk: int, method: str | None) -> None:
    validator = DatasetValidator(
        method=method, file_id="file-x", count_tokens=lambda _: 3, token_limit=2, max_line_bytes=512
    )
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    report = validator.finish()
    error = report.error()
    assert report.n_problems >= len(report.problems)
    assert error is None or (error.code and error.message and error.param == "training_file")
    for problem in report.problems:
        assert problem.line >= 1 and str(problem).startswith(f"Example {problem.line}")


@FUZZ
@given(
    st.binary(max_size=2048),
    st.integers(min_value=1, max_value=64),
    st.sampled_from([None, "supervised", "dpo"]),
)
def test_random_bytes_never_crash_the_validator(
    data: bytes, chunk: int, method: str | None
) -> None:
    run(data, chunk, method)


@FUZZ
@given(
    st.lists(json_values, max_size=12),
    st.integers(min_value=1, max_value=4096),
    st.sampled_from([None, "supervised", "dpo"]),
)
def test_random_json_lines_never_crash_the_validator(
    values: list[object], chunk: int, method: str | None
) -> None:
    run(b"\n".join(orjson.dumps(v) for v in values), chunk, method)


message = st.fixed_dictionaries(
    {"role": st.sampled_from(WORDS)},
    optional={
        "content": json_values,
        "weight": json_values,
        "tool_calls": json_values,
        "tool_call_id": json_values,
        "name": json_values,
    },
)


@FUZZ
@given(st.lists(st.lists(message, max_size=5), max_size=12), st.integers(1, 4096))
def test_random_chat_examples_never_crash_the_validator(
    conversations: list[list[dict[str, object]]], chunk: int
) -> None:
    data = b"\n".join(orjson.dumps({"messages": m}) for m in conversations)
    run(data, chunk, "supervised")


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
VALID_EXAMPLES = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    {
        "messages": [
            {"role": "system", "content": "be brief", "name": "rules"},
            {"role": "developer", "content": [{"type": "text", "text": "hi"}]},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL], "weight": 1},
            {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
            {"role": "assistant", "content": "sunny", "weight": 0},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "ok"},
            {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "functions": [{"name": "f"}],
        "parallel_tool_calls": False,
    },
]
DELETE = object()
KEYS_TO_MUTATE = [
    "role", "content", "weight", "tool_calls", "tool_call_id", "function_call", "name", "text",
    "type", "id", "function", "arguments", "parameters", "messages", "tools", "functions",
    "parallel_tool_calls", "image_url",
]  # fmt: skip
VALUES = [
    DELETE, None, "", "x", "{", "{}", 0, 1, 2, 0.5, True, [], {}, [{}], {"name": "f"},
    [{"type": "text"}], [{"type": "image_url", "image_url": {"url": "u"}}], "assistant", "tool",
    "call_1", "call_9", [CALL], {"name": "", "arguments": "{}"},
]  # fmt: skip


def containers(value: object) -> list[dict[str, object]]:
    """Every object inside ``value``, so a mutation can land anywhere in an example."""
    found: list[dict[str, object]] = []
    if isinstance(value, dict):
        found.append(value)
        for item in value.values():
            found.extend(containers(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(containers(item))
    return found


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(range(len(VALID_EXAMPLES))),
    st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(KEYS_TO_MUTATE), st.sampled_from(VALUES)),
        min_size=1,
        max_size=2,
    ),
)
def test_the_fast_path_accepts_only_what_the_checks_accept(
    which: int, mutations: list[tuple[int, str, object]]
) -> None:
    example = orjson.loads(orjson.dumps(VALID_EXAMPLES[which]))
    for where, key, value in mutations:
        targets = containers(example)
        target = targets[where % len(targets)]
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = orjson.loads(orjson.dumps(value))  # a copy: VALUES stay as written
    raw = orjson.dumps(example)

    if fast_chat.accepts(raw):
        assert check_chat(orjson.loads(raw), accepts_images=False) == []


def test_the_fast_path_takes_the_valid_examples() -> None:
    for example in VALID_EXAMPLES:
        assert check_chat(example, accepts_images=False) == []
        assert fast_chat.accepts(orjson.dumps(example))


def structure(data: bytes, chunk: int, structure_only: bool) -> tuple[object, int]:
    validator = DatasetValidator(max_line_bytes=256, structure_only=structure_only)
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    report = validator.finish()
    return report.first_structural, report.n_examples


line_pieces = st.one_of(
    json_values.map(orjson.dumps),
    st.binary(max_size=40),
    st.sampled_from([b"", b"  ", b"\xef\xbb\xbf{}", b'{"a": "\xc3("}', b'{"a": "\xed\xa0\x80"}',
                     b'{"\xff": 1}', b'{"a": "\xc3\xa9"}', b"[1]", b'{"a": 1}\r', b"{" * 300]),
)  # fmt: skip


@FUZZ
@given(st.lists(line_pieces, max_size=12), st.integers(min_value=1, max_value=600))
def test_the_upload_check_finds_the_same_first_problem_as_the_full_check(
    lines: list[bytes], chunk: int
) -> None:
    """The upload check's all-at-once path never passes a line the exact check refuses: both
    name the same first structural problem (or none) and count the same examples."""
    data = b"\n".join(lines)
    assert structure(data, chunk, structure_only=True) == structure(data, chunk, False)
