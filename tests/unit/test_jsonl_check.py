from __future__ import annotations

import pytest

from service.files.jsonl_check import JsonlStructureCheck


def run(data: bytes, chunk: int = 3, max_line: int = 1000) -> JsonlStructureCheck:
    check = JsonlStructureCheck(max_line)
    for start in range(0, len(data), chunk):
        check.feed(data[start : start + chunk])
    check.finish()
    return check


@pytest.mark.parametrize("chunk", [1, 2, 7, 4096])
def test_objects_blank_lines_crlf_and_bom_pass_whatever_the_chunking(chunk: int) -> None:
    check = run(b'\xef\xbb\xbf{"a": 1}\r\n\n  \n{"b": [1]}\n{"c": 3}', chunk)

    assert check.problem is None
    assert check.objects == 3


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":1}\n{"a": "\xc3\x28"}\n', "line 2 is not valid UTF-8 (byte 0xc3 at position 8)"),
        (b'{"a":1}\n{"a":1}\n{"a":\n', "line 3 is not valid JSON"),
        (b'"text"\n', "line 1 is a JSON string, not an object"),
        (b'{"a":1}\nnull\n', "line 2 is JSON null, not an object"),
        (b"\n\n42", "line 3 is a JSON number, not an object"),
    ],
)
def test_first_problem_names_its_line(data: bytes, expected: str) -> None:
    problem = run(data).problem

    assert problem is not None and expected in problem


def test_only_the_first_problem_is_kept() -> None:
    assert "line 1 " in (run(b"[1]\n[2]\n").problem or "")


def test_a_line_longer_than_the_limit_is_refused_before_it_is_buffered() -> None:
    check = JsonlStructureCheck(max_line_bytes=10)
    check.feed(b'{"a": 1}\n' + b"x" * 11)

    assert check.problem is not None and "line 2 is longer than 10 bytes" in check.problem


def test_a_bom_is_only_skipped_on_the_first_line() -> None:
    assert run(b'{"a":1}\n\xef\xbb\xbf{"a":1}\n').problem is not None
