"""Log lines as text or as JSON, carrying the ids of what they are about.

``OPENFT_LOG_FORMAT=json`` gives one JSON object per line (time, level, logger, message and, where
known, ``request_id``, ``project_id``, ``project`` and ``job_id``) for log collectors; the ids come
from a per-request (or per-job) context that the request middleware, authentication and the worker
fill in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

# A dict, not separate variables: code running in a worker thread (sync dependencies) gets a copy
# of the context, but the same dict, so what it adds is seen by the request's later log lines.
_ids: ContextVar[dict[str, str] | None] = ContextVar("openft_log_ids", default=None)


@contextlib.contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Ids for every line logged inside the block (nested blocks add to the outer ones)."""
    token = _ids.set({**(_ids.get() or {}), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


def add_log_ids(**ids: str) -> None:
    """Add ids to the current block's (e.g. the project, once the request is authenticated)."""
    current = _ids.get()
    if current is not None:
        current.update(ids)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(_ids.get() or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure_logging(level: str = "info", log_format: LogFormat = "text") -> None:
    """One handler on the root logger, on stderr; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every call to a model server at INFO: a line per served request that the
    # access log already has (and its cost on the serving path); kept at debug level.
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else "WARNING")
