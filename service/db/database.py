"""Engine and session scopes: ``read()`` for queries, ``write()`` for one committed transaction.

On SQLite the connection runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing at their first write.

A database that is down, restarting, full or too busy raises ``ServiceUnavailableError`` out of
both scopes (the API's 503 with ``retry-after``). A pooled PostgreSQL connection is checked at
checkout without a round trip: one the server closed while it sat idle (a restart, a failover, an
idle timeout) has a readable socket, and is replaced before use; one that dies mid-statement
fails that request with the 503 and the pool drops its other connections of the same age.
"""

from __future__ import annotations

import json
import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from service.errors import ServiceUnavailableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
_IMMEDIATE = "openft_sqlite_immediate"
# PostgreSQL SQLSTATE classes that say "not now" rather than "wrong": connection exception,
# transaction rollback (serialization, deadlock), insufficient resources, operator intervention.
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
TRANSIENT_SQLITE_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR")


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and explicit BEGIN handling."""
    parsed = make_url(url)
    codec = {"json_serializer": _json_text, "json_deserializer": _json_value}
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, **codec)
        event.listen(engine, "checkout", _replace_if_closed_by_server)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False}, **codec)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _json_text(value: Any) -> str:
    """JSON columns are written and read with orjson (a job row carries several); keys that are
    not strings become strings, as the standard library wrote them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_value(text: str | bytes) -> Any:
    """orjson, or the standard library for a value only it wrote (``NaN``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _replace_if_closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """An idle connection has nothing to read: a readable socket means the server closed it (and
    said why). ``DisconnectionError`` has the pool open a fresh connection instead."""
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        closed = bool(poller.poll(0))
    except Exception as exc:  # closed on our side already (the driver's "connection is closed")
        raise sa_exc.DisconnectionError(str(exc)) from exc
    if closed:
        raise sa_exc.DisconnectionError("the server closed this idle connection")


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from pysqlite so that _begin_sqlite_transaction decides the mode.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite_transaction(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Owns the engine; hands out short-lived sessions."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url)
        writer = self.engine.execution_options(**{_IMMEDIATE: True})
        reader = self.engine
        if self.engine.dialect.name == "postgresql":
            # Reads need no transaction of their own: no BEGIN and ROLLBACK round trips.
            reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._readers = sessionmaker(reader, expire_on_commit=False)
        self._writers = sessionmaker(writer, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with database_errors(), self._readers() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction, committed when the block ends and rolled back if it raises."""
        with database_errors(), self._writers() as session, session.begin():
            yield session

    @contextmanager
    def write_one(self) -> Iterator[Session]:
        """For a single write statement, atomic by itself: one round trip on PostgreSQL (no
        transaction around it); on SQLite a write transaction like ``write()``."""
        if self.dialect != "postgresql":
            with self.write() as session:
                yield session
            return
        # The readers' autocommit connections: the statement is its own transaction.
        with database_errors(), self._readers() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def add_to_row(
    session: Session,
    table: Any,
    values: dict[str, Any],
    *,
    index: Sequence[str],
    counters: Sequence[str],
) -> None:
    """Add ``values``' ``counters`` to ``table``'s row with ``values``' ``index`` columns, or
    insert ``values`` as that row: one statement, safe under concurrency on both databases."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=list(index),
        set_={name: getattr(table, name) + statement.excluded[name] for name in counters},
    )
    session.execute(statement)


@contextmanager
def database_errors() -> Iterator[None]:
    """The database being unavailable becomes a 503; every other database error stays a bug."""
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        if not is_unavailable(exc):
            raise
        raise ServiceUnavailableError(
            "The database is not reachable right now; try again shortly.",
            headers={"retry-after": "2"},
        ) from exc


def is_unavailable(exc: Exception) -> bool:
    """True for errors that say the database cannot serve now (down, restarting, busy, full)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlite_error = getattr(exc.orig, "sqlite_errorname", None)
    if sqlite_error is not None:
        return str(sqlite_error).startswith(TRANSIENT_SQLITE_ERRORS)
    if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)  # None: no server answered (psycopg)
    return sqlstate is None or str(sqlstate)[:2] in TRANSIENT_SQLSTATE_CLASSES
