"""Cursor pagination on a monotonic ``seq`` column: ``after`` is an object id, never an offset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from service.errors import no_such_object

Order = Literal["asc", "desc"]
T = TypeVar("T")
S = TypeVar("S", bound=Select)  # type: ignore[type-arg]


def after_cursor(
    query: S, seq: InstrumentedAttribute[int], after_seq: int | None, order: Order
) -> S:
    """Rows strictly after the cursor, in ``order``; fetch ``limit + 1`` to learn ``has_more``."""
    if after_seq is not None:
        query = query.where(seq < after_seq if order == "desc" else seq > after_seq)
    return query.order_by(seq.desc() if order == "desc" else seq.asc())


def split_page(rows: Sequence[T], limit: int) -> tuple[list[T], bool]:
    """The first ``limit`` rows and whether more exist (the query asked for ``limit + 1``)."""
    return list(rows[:limit]), len(rows) > limit


def cursor_position(
    after: str | None, seq_of: Callable[[str], int | None], kind: str
) -> int | None:
    """The ``seq`` of the ``after`` object; 404 (``param: after``) when it is not the caller's."""
    if after is None:
        return None
    seq = seq_of(after)
    if seq is None:
        raise no_such_object(kind, after, param="after")
    return seq
