"""The one validator of fine-tuning files, fed bytes as they stream and pure otherwise.

The upload check feeds it the body of ``POST /v1/files`` and refuses a file only for structural
problems (not UTF-8, not one JSON object per line, a line over the limit); the worker feeds it the
stored file in ``validating_files`` with the job's method and the base model's tokenizer, and a
file with any problem fails the job with OpenAI's error object. Memory stays flat: the validator
keeps counters, the first few problems and one partial line, never the file.

The upload check (``structure_only``) takes a fed chunk at once when msgspec reads every line of
it as a JSON object without building its values (``msgspec.Raw``) and the chunk is UTF-8 (msgspec
does not check the UTF-8 of skipped values); it refuses nothing orjson accepts, so any other chunk
goes line by line through the exact check, which finds and words the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from service.datasets import fast_chat
from service.datasets.checks import (
    CHAT,
    COMPLETION,
    PREFERENCE,
    REINFORCEMENT,
    Finding,
    check_chat,
    check_completion,
    check_preference,
    check_reinforcement,
    format_of,
    json_kind,
)

MIN_TRAINING_EXAMPLES = 10
MIN_VALIDATION_EXAMPLES = 1
LISTED_PROBLEMS = 10
MIB = 1024 * 1024
# The formats each method trains on; the first is the one its errors name.
METHOD_FORMATS = {
    "supervised": (CHAT, COMPLETION),
    "dpo": (PREFERENCE,),
    "reinforcement": (REINFORCEMENT,),
}
# Checks the grader's ``item`` of a valid reinforcement example; a problem's detail, or None.
ItemCheck = Callable[[dict[str, Any]], str | None]
_BOM = b"\xef\xbb\xbf"
_BLANK = frozenset(b" \t\r\n\f\v")

_read_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode

# Counts the tokens of one valid example with the base model's tokenizer (before truncation).
TokenCounter = Callable[[dict[str, Any]], int]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in one example; ``line`` is the 1-based example (line) number."""

    line: int
    detail: str
    message: int | None = None
    structural: bool = False

    def __str__(self) -> str:
        where = f"Example {self.line}" + (f", message {self.message}" if self.message else "")
        return f"{where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class JobError:
    """OpenAI's ``error`` object of a failed job."""

    code: str
    message: str
    param: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass
class ValidationReport:
    """What one pass over a file found: counts, formats, tokens and the first problems."""

    param: str
    file_id: str
    method: str | None
    n_examples: int = 0
    format: str | None = None
    problems: list[Problem] = field(default_factory=list)
    n_problems: int = 0
    first_structural: Problem | None = None
    total_tokens: int = 0  # per epoch, after truncation: what one epoch bills
    n_truncated: int = 0
    max_example_tokens: int = 0
    token_limit: int | None = None

    @property
    def kind(self) -> str:
        return "training" if self.param == "training_file" else "validation"

    def error(self) -> JobError | None:
        """The job's error when this file cannot be trained on, in OpenAI's words."""
        invalid = f"invalid_{self.kind}_file"
        lead = f"The job failed due to an invalid {self.kind} file. Invalid file format. "
        if self.problems:
            listed = "; ".join(str(p) for p in self.problems)
            more = self.n_problems - len(self.problems)
            tail = (
                f" ({self.n_problems} problems in total; the first {len(self.problems)} are listed)"
            )
            return JobError(invalid, lead + listed + (tail if more else ""), self.param)
        if (mismatch := self._method_mismatch()) is not None:
            return JobError(invalid, lead + mismatch, self.param)
        minimum = (
            MIN_TRAINING_EXAMPLES if self.param == "training_file" else MIN_VALIDATION_EXAMPLES
        )
        if self.n_examples < minimum:
            found = "is empty" if self.n_examples == 0 else f"has {self.n_examples} example(s)"
            return JobError(
                "invalid_n_examples",
                f"{self.kind.capitalize()} file {found}, but must have at least {minimum} examples",
                self.param,
            )
        return None

    def _method_mismatch(self) -> str | None:
        expected = METHOD_FORMATS.get(self.method or "")
        if expected is None or self.format is None or self.format in expected:
            return None
        wanted = next(m for m, formats in METHOD_FORMATS.items() if self.format in formats)
        return (
            f"Input file {self.file_id} is in the {self.format} format, but the specified "
            f"fine-tuning job is not using '{wanted}' as the training method "
            f"(provided method={self.method})."
        )


class DatasetValidator:
    """Streaming validator: ``feed`` it chunks of a JSONL file, then ``finish``.

    ``method`` (``supervised``, ``dpo``) makes the example format part of the check; without it
    (the upload check) every format is accepted. ``count_tokens`` is called once per valid example
    while the file has no problem yet; counts over ``token_limit`` are truncated, as OpenAI does.
    """

    def __init__(
        self,
        *,
        param: str = "training_file",
        file_id: str = "",
        method: str | None = None,
        count_tokens: TokenCounter | None = None,
        token_limit: int | None = None,
        accepts_images: bool = False,
        max_line_bytes: int = 64 * MIB,
        item_check: ItemCheck | None = None,
        structure_only: bool = False,
    ) -> None:
        self.report = ValidationReport(param, file_id, method, token_limit=token_limit)
        self.line = 0  # number of the line being checked, 1-based
        self._count_tokens = count_tokens
        self._counted_formats = METHOD_FORMATS.get(method) if method else None
        self._accepts_images = accepts_images
        self._method = method
        self._item_check = item_check
        self._max_line_bytes = max_line_bytes
        self._format_line = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._skipping_long_line = False
        self._structure_only = structure_only

    def feed(self, data: bytes) -> None:
        lines = data.split(b"\n")
        tail = lines.pop()
        if lines and (self._pending or self._skipping_long_line):
            lines[0] = self._take_pending(lines[0])
        if self._structure_only and self._all_objects(lines):
            self.line += len(lines)
            self.report.n_examples += len(lines)
        else:
            for raw in lines:
                self._check_line(raw)
        if tail:
            self._hold(tail)

    def _all_objects(self, lines: list[bytes]) -> bool:
        """Whether every line is certainly one JSON object within the limits (False: ask
        ``_check_line``, which also knows blank lines and the byte order mark)."""
        if not lines or max(map(len, lines)) > self._max_line_bytes:
            return False
        if self.line == 0 and lines[0].startswith(_BOM):
            return False
        for raw in lines:
            try:
                _read_object(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                return False
        return all(map(bytes.isascii, lines)) or _utf8(lines)

    def finish(self) -> ValidationReport:
        if self._pending or self._skipping_long_line:
            self._check_line(self._take_pending(b""))
        return self.report

    def _hold(self, piece: bytes) -> None:
        if self._skipping_long_line:
            return
        self._pending.append(piece)
        self._pending_bytes += len(piece)
        if self._pending_bytes > self._max_line_bytes:
            self._pending.clear()
            self._pending_bytes = 0
            self._skipping_long_line = True

    def _take_pending(self, last: bytes) -> bytes:
        if self._skipping_long_line:
            return b""
        self._pending.append(last)
        joined = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return joined

    def _check_line(self, raw: bytes) -> None:
        self.line += 1
        if self._skipping_long_line:
            self._skipping_long_line = False
            self.report.n_examples += 1
            self._structural(f"the line is longer than {self._max_line_bytes} bytes")
            return
        if len(raw) > self._max_line_bytes:
            self.report.n_examples += 1
            self._structural(f"the line is longer than {self._max_line_bytes} bytes")
            return
        if self.line == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        if not raw or (raw[0] in _BLANK and not raw.strip()):
            return
        report = self.report
        report.n_examples += 1
        if (
            not self._structure_only
            and report.format in (None, CHAT)
            and self._method != "reinforcement"
            and fast_chat.accepts(raw)
        ):
            self._accept_chat()
            if self._counts(CHAT):
                self._count(orjson.loads(raw))
            return
        example = self._json_object(raw)
        if example is not None and not self._structure_only:
            self._check_example(example)

    def _json_object(self, raw: bytes) -> dict[str, Any] | None:
        """The line's JSON object; None, with its structural problem noted, for anything else."""
        try:
            example = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._structural(_parse_problem(raw, exc))
            return None
        if type(example) is not dict:
            self._structural(f"expected a JSON object, got {json_kind(example)}")
            return None
        return example

    def _check_example(self, example: dict[str, Any]) -> None:
        found = format_of(example, self._method)
        if found is None:
            self._add(
                Problem(
                    self.line,
                    "unrecognized example; expected 'messages' (chat), 'input' with "
                    "'preferred_output' and 'non_preferred_output' (preference), or 'prompt' "
                    "and 'completion'",
                )
            )
            return
        report = self.report
        if report.format is None:
            report.format, self._format_line = found, self.line
        elif found != report.format:
            self._add(
                Problem(
                    self.line,
                    f"the file mixes formats: this example is in the {found} format, but "
                    f"example {self._format_line} is in the {report.format} format",
                )
            )
            return
        if found == CHAT:
            findings = check_chat(example, self._accepts_images)
        elif found == PREFERENCE:
            findings = check_preference(example, self._accepts_images)
        elif found == REINFORCEMENT:
            findings = check_reinforcement(example, self._accepts_images)
            if not findings and self._item_check is not None:
                problem = self._item_check(example)
                findings = [(None, problem)] if problem else []
        else:
            findings = check_completion(example)
        if findings:
            self._add_findings(findings)
        elif self._counts(found):
            self._count(example)

    def _counts(self, found: str) -> bool:
        """Whether an example in format ``found`` goes to the token counter: only while the file
        has no problem, and only in a format the job's method trains on."""
        return (
            self._count_tokens is not None
            and self.report.n_problems == 0
            and (self._counted_formats is None or found in self._counted_formats)
        )

    def _accept_chat(self) -> None:
        if self.report.format is None:
            self.report.format, self._format_line = CHAT, self.line

    def _count(self, example: dict[str, Any]) -> None:
        assert self._count_tokens is not None
        report = self.report
        tokens = self._count_tokens(example)
        report.max_example_tokens = max(report.max_example_tokens, tokens)
        if report.token_limit is not None and tokens > report.token_limit:
            report.n_truncated += 1
            tokens = report.token_limit
        report.total_tokens += tokens

    def _structural(self, detail: str) -> None:
        problem = Problem(self.line, detail, structural=True)
        if self.report.first_structural is None:
            self.report.first_structural = problem
        self._add(problem)

    def _add_findings(self, findings: list[Finding]) -> None:
        for message, detail in findings:
            self._add(Problem(self.line, detail, message))

    def _add(self, problem: Problem) -> None:
        self.report.n_problems += 1
        if len(self.report.problems) < LISTED_PROBLEMS:
            self.report.problems.append(problem)


def _utf8(lines: list[bytes]) -> bool:
    try:
        b"".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_problem(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"the line is not valid UTF-8 (byte 0x{raw[bad.start]:02x} at position "
            f"{bad.start + 1}); files for fine-tuning must be UTF-8 encoded JSONL"
        )
    return f"not valid JSON ({exc.msg}); each line must hold one JSON object"
