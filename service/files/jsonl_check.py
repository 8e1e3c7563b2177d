"""The fast structural check of fine-tune uploads: UTF-8, one JSON object per non-empty line.

It is fed the upload chunk by chunk while it streams to the blob store and remembers the first
problem with its line number. Deeper checks of the examples belong to the job's validation stage.
"""

from __future__ import annotations

import orjson

PREFIX = "Invalid file format for fine-tune: "
_JSON_KINDS = {
    list: "a JSON array",
    str: "a JSON string",
    bool: "a JSON boolean",
    int: "a JSON number",
    float: "a JSON number",
    type(None): "JSON null",
}
_BOM = b"\xef\xbb\xbf"


class JsonlStructureCheck:
    """Incremental check; ``problem`` is None while every line seen so far is a JSON object."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.problem: str | None = None
        self.lines = 0
        self.objects = 0
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        start = 0
        while self.problem is None and (end := data.find(b"\n", start)) != -1:
            self._pending += data[start:end]
            self._check_line(bytes(self._pending))
            self._pending.clear()
            start = end + 1
        if self.problem is None:
            self._pending += data[start:]
            if len(self._pending) > self.max_line_bytes:
                self.problem = (
                    f"{PREFIX}line {self.lines + 1} is longer than {self.max_line_bytes} bytes."
                )

    def finish(self) -> None:
        if self.problem is None and self._pending:
            self._check_line(bytes(self._pending))
            self._pending.clear()

    def _check_line(self, raw: bytes) -> None:
        self.lines += 1
        line = raw.rstrip(b"\r")
        if self.lines == 1:
            line = line.removeprefix(_BOM)
        if not line.strip():
            return
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem = (
                f"{PREFIX}line {self.lines} is not valid UTF-8 (byte 0x{line[exc.start]:02x} at "
                f"position {exc.start + 1}). Files for fine-tuning must be UTF-8 encoded JSONL."
            )
            return
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self.problem = (
                f"{PREFIX}line {self.lines} is not valid JSON ({exc.msg}). "
                "Each line must hold one JSON object (JSONL)."
            )
            return
        if not isinstance(value, dict):
            kind = _JSON_KINDS.get(type(value), "not a JSON object")
            self.problem = (
                f"{PREFIX}line {self.lines} is {kind}, not an object. "
                "Each line must hold one JSON object (JSONL)."
            )
            return
        self.objects += 1
