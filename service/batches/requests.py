"""A batch input file's lines: what each must hold (OpenAI's ``BatchRequestInput``), and the
file-level problems that fail a batch while it validates (with their line numbers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
# What api.openai.com also batches and OpenFT serves to nobody: a clear 400 at creation.
UNSERVED_ENDPOINTS = (
    "/v1/embeddings",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
MAX_ERRORS = 100  # file-level errors listed on a failed batch (the first ones)


@dataclass(frozen=True)
class BatchRequest:
    """One line to send: its 1-based line number, ``custom_id`` and request body."""

    line: int
    custom_id: str
    body: dict[str, Any]

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else ""


@dataclass(frozen=True)
class LineProblem:
    """Why a line makes the whole file unusable (OpenAI's ``errors.data`` entry)."""

    code: str
    message: str
    line: int | None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def lines_of(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines with their 1-based numbers, read chunk by chunk."""
    number, pending = 0, b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            if raw.strip():
                yield number, raw
    if pending.strip():
        yield number + 1, pending


def parse_line(number: int, raw: bytes, endpoint: str) -> BatchRequest | LineProblem:
    """The request on line ``number``, or why it cannot be one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineProblem(
            "invalid_json_line",
            f"Line {number} is not valid JSON; each line must be one JSON object.",
            number,
        )
    if not isinstance(value, dict):
        return LineProblem(
            "invalid_request", f"Line {number} must be a JSON object, not {_kind(value)}.", number
        )
    for name in ("custom_id", "method", "url", "body"):
        if name not in value:
            return LineProblem(
                "missing_required_parameter",
                f"Line {number} is missing the required field '{name}'.",
                number,
                name,
            )
    custom_id, method, url, body = value["custom_id"], value["method"], value["url"], value["body"]
    if not isinstance(custom_id, str) or not custom_id:
        return LineProblem(
            "invalid_custom_id", f"Line {number}: 'custom_id' must be a non-empty string.",
            number, "custom_id",
        )  # fmt: skip
    if method != "POST":
        return LineProblem(
            "invalid_method", f"Line {number}: 'method' must be 'POST', not {method!r}.",
            number, "method",
        )  # fmt: skip
    if url != endpoint:
        return LineProblem(
            "mismatched_url",
            f"Line {number}: 'url' is {url!r}, but this batch's endpoint is '{endpoint}'; every "
            "line of a batch must call the batch's endpoint.",
            number,
            "url",
        )
    if not isinstance(body, dict):
        return LineProblem(
            "invalid_body", f"Line {number}: 'body' must be a JSON object.", number, "body"
        )
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineProblem(
            "missing_model",
            f"Line {number}: 'body' must name a 'model'.",
            number,
            "body.model",
        )
    return BatchRequest(number, custom_id, body)


@dataclass
class InputCheck:
    """Reads a whole input file: counts its requests, notes its models, and collects the
    problems that fail the batch (duplicate ``custom_id``s and too many lines included)."""

    endpoint: str
    max_requests: int
    total: int = 0
    models: set[str] = field(default_factory=set)
    problems: list[LineProblem] = field(default_factory=list)
    _custom_ids: set[str] = field(default_factory=set)

    def read(self, chunks: Iterable[bytes]) -> None:
        for number, raw in lines_of(chunks):
            parsed = parse_line(number, raw, self.endpoint)
            if isinstance(parsed, LineProblem):
                self._problem(parsed)
                continue
            self.total += 1
            self.models.add(parsed.model)
            if parsed.custom_id in self._custom_ids:
                self._problem(
                    LineProblem(
                        "duplicate_custom_id",
                        f"Line {number}: the custom_id {parsed.custom_id!r} is already used by an "
                        "earlier line; each line needs its own.",
                        number,
                        "custom_id",
                    )
                )
            self._custom_ids.add(parsed.custom_id)
        if self.total == 0 and not self.problems:
            self._problem(LineProblem("empty_file", "The input file holds no requests.", None))
        if self.total > self.max_requests:
            self._problem(
                LineProblem(
                    "too_many_requests",
                    f"The input file holds {self.total} requests; a batch may hold at most "
                    f"{self.max_requests}.",
                    None,
                )
            )

    def _problem(self, problem: LineProblem) -> None:
        if len(self.problems) < MAX_ERRORS:
            self.problems.append(problem)

    @property
    def model(self) -> str | None:
        """The batch's model when every line names the same one (OpenAI's ``model``)."""
        return next(iter(self.models)) if len(self.models) == 1 else None


def requests_of(chunks: Iterable[bytes], endpoint: str) -> Iterator[BatchRequest]:
    """The requests of a file that passed ``InputCheck`` (a line that no longer parses is
    skipped: the file cannot change, so it cannot happen)."""
    for number, raw in lines_of(chunks):
        parsed = parse_line(number, raw, endpoint)
        if isinstance(parsed, BatchRequest):
            yield parsed


def _kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")
