"""Cursor pagination on a monotonic ``seq`` column: ``after`` is an object id, never an offset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from sqlalchemy import ScalarSelect, Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import no_such_object

Order = Literal["asc", "desc"]
T = TypeVar("T")
S = TypeVar("S", bound=Select)  # type: ignore[type-arg]
Cursor = ScalarSelect[int] | None


def after_cursor(query: S, seq: InstrumentedAttribute[int], after: Cursor, order: Order) -> S:
    """Rows strictly after the cursor, in ``order``; fetch ``limit + 1`` to learn ``has_more``.

    ``after`` is the cursor object's ``seq`` as a scalar subquery, so a page is one statement
    however deep it is (``cursor_page`` tells a foreign cursor from the end of the list).
    """
    if after is not None:
        query = query.where(seq < after if order == "desc" else seq > after)
    return query.order_by(seq.desc() if order == "desc" else seq.asc())


def split_page(rows: Sequence[T], limit: int) -> tuple[list[T], bool]:
    """The first ``limit`` rows and whether more exist (the query asked for ``limit + 1``)."""
    return list(rows[:limit]), len(rows) > limit


def cursor_page(
    session: Session,
    after: str | None,
    position: Callable[[str], Select[int]],
    fetch: Callable[[Cursor], list[T]],
    kind: str,
) -> list[T]:
    """``fetch`` the page after the ``after`` object in one statement (its position is a
    subquery); 404 (``param: after``) when ``after`` is not one of the caller's objects.

    Only an empty page needs that check: a cursor that matched nothing leaves no rows.
    """
    if after is None:
        return fetch(None)
    found = position(after)
    rows = fetch(found.scalar_subquery())
    if not rows and session.scalar(found) is None:
        raise no_such_object(kind, after, param="after")
    return rows


def list_envelope(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object over a page of objects that carry an ``id``."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def page_in_memory(
    items: list[dict[str, Any]],
    *,
    limit: int,
    order: Order,
    after: str | None,
    unknown_after: Callable[[str], Exception],
) -> dict[str, Any]:
    """A list page over objects already read, oldest first (a stored response's items, a stored
    completion's messages), paged with ``after`` (an id among them, else ``unknown_after``)."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise unknown_after(after)
        ordered = ordered[ids.index(after) + 1 :]
    return list_envelope(ordered[:limit], len(ordered) > limit)
