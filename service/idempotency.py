"""``Idempotency-Key`` on create calls: a retried request gets the object the first one made.

The key is remembered in the same transaction that creates the object, under a unique index on
(project, operation, key). Two identical requests racing both do the work, but only one commits;
the other's transaction fails on the index, its work is rolled back (a staged file blob is
deleted), and it answers with the winner's object. A key sent again with a different request is
refused; keys are forgotten after ``OPENFT_IDEMPOTENCY_KEY_HOURS``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Header
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth.principal import Principal
from service.db.database import Database
from service.db.models import IdempotencyKey
from service.errors import InvalidRequestError

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
T = TypeVar("T")
# Visible ASCII, inner spaces allowed (leading and trailing ones would not survive HTTP).
KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"

IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": KEY_PATTERN},
        description="Optional: a retry with the same key (and the same request) returns the "
        "object the first request created instead of creating another.",
    ),
]


def fingerprint(*parts: Any) -> str:
    """A stable hash of what a request asked for, to tell a retry from a reused key."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if len(key) > MAX_KEY_CHARS or not re.fullmatch(KEY_PATTERN, key):
        raise InvalidRequestError(
            f"'{HEADER}' must be 1 to {MAX_KEY_CHARS} visible ASCII characters (spaces only "
            "inside).",
            param=HEADER,
        )
    return key


def earlier_object(
    session: Session,
    principal: Principal,
    operation: str,
    key: str,
    request_hash: str,
    ttl_s: float,
) -> str | None:
    """The id of the object this key already created, or None (first use, or forgotten)."""
    row = session.scalars(
        select(IdempotencyKey).where(
            IdempotencyKey.project_id == principal.project_id,
            IdempotencyKey.operation == operation,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at > time.time() - ttl_s,
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise InvalidRequestError(
            f"This '{HEADER}' was already used with a different request. Use a new key for a "
            "new request; send the same request again to get the object it created.",
            param=HEADER,
            code="idempotency_key_reused",
        )
    return row.object_id


def remember(
    session: Session,
    principal: Principal,
    operation: str,
    key: str,
    request_hash: str,
    object_id: str,
    ttl_s: float,
) -> None:
    """Record the key with the object, in the transaction that creates the object."""
    session.execute(  # a forgotten use of the same key no longer counts
        delete(IdempotencyKey).where(
            IdempotencyKey.project_id == principal.project_id,
            IdempotencyKey.operation == operation,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at <= time.time() - ttl_s,
        )
    )
    session.add(
        IdempotencyKey(
            project_id=principal.project_id,
            operation=operation,
            key=key,
            request_hash=request_hash,
            object_id=object_id,
            created_at=int(time.time()),
        )
    )
    session.flush()


Remember = Callable[[Session, str], None]


def create_once(
    db: Database,
    principal: Principal,
    operation: str,
    key: str | None,
    request_hash: Callable[[], str],
    ttl_s: float,
    *,
    create: Callable[[Remember | None], T],
    find: Callable[[Session, str], T | None],
) -> T:
    """Create an object at most once per ``Idempotency-Key`` (and once per request without one).

    ``create(remember)`` makes the object and, when given ``remember``, calls it with its
    session and the new object's id inside the creating transaction; ``find(session, id)`` reads
    an object an earlier request made (None: it is gone, so this request creates anew). A
    concurrent duplicate that loses the race on the key's unique index answers with the
    winner's object.
    """
    key = checked_key(key)
    if key is None:
        return create(None)
    fingerprinted = request_hash()

    def earlier() -> T | None:
        with db.read() as session:
            object_id = earlier_object(session, principal, operation, key, fingerprinted, ttl_s)
            return None if object_id is None else find(session, object_id)

    def remembered(session: Session, object_id: str) -> None:
        remember(session, principal, operation, key, fingerprinted, object_id, ttl_s)

    found = earlier()
    if found is not None:
        return found
    try:
        return create(remembered)
    except IntegrityError as exc:
        if not lost_race(exc) or (found := earlier()) is None:
            raise
        return found


def lost_race(error: IntegrityError) -> bool:
    """Whether a failed commit is the idempotency index refusing a concurrent duplicate."""
    return "idempotency_keys" in str(error.orig) or "uq_idempotency_keys" in str(error.orig)


def forget_expired(session: Session, ttl_s: float) -> int:
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at <= time.time() - ttl_s)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
