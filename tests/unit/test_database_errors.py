"""Which database errors are "not now" (a 503 the client may retry) and which stay bugs (500)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from service.db.database import Database, is_unavailable
from service.errors import ServiceUnavailableError


def wrapped(kind: type[sa_exc.DBAPIError], error: Exception) -> sa_exc.DBAPIError:
    return kind("SELECT 1", {}, error)


def sqlite_error(name: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(name)
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (wrapped(sa_exc.OperationalError, psycopg.OperationalError("connection refused")), True),
        (wrapped(sa_exc.OperationalError, psycopg.errors.AdminShutdown()), True),
        (wrapped(sa_exc.OperationalError, psycopg.errors.DiskFull()), True),
        (wrapped(sa_exc.OperationalError, psycopg.errors.SerializationFailure()), True),
        (wrapped(sa_exc.ProgrammingError, psycopg.errors.UndefinedTable()), False),
        (wrapped(sa_exc.IntegrityError, psycopg.errors.UniqueViolation()), False),
        (wrapped(sa_exc.OperationalError, sqlite_error("SQLITE_BUSY")), True),
        (wrapped(sa_exc.OperationalError, sqlite_error("SQLITE_FULL")), True),
        (wrapped(sa_exc.OperationalError, sqlite_error("SQLITE_ERROR")), False),  # no such table
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
    ],
)
def test_only_errors_that_say_not_now_are_unavailable(error: Exception, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable


def test_a_bug_stays_a_bug_and_a_dead_server_is_a_503(tmp_path: Path) -> None:
    sqlite = Database(f"sqlite:///{tmp_path / 'openft.db'}")
    dead = Database("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")

    with pytest.raises(sa_exc.OperationalError), sqlite.read() as session:
        session.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(ServiceUnavailableError) as refused, dead.write() as session:
        session.execute(text("SELECT 1"))

    assert refused.value.status_code == 503 and refused.value.headers["retry-after"]
