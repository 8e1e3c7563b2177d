"""Engine and session scopes: ``read()`` for queries, ``write()`` for one committed transaction.

On SQLite the connection runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing at their first write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
_IMMEDIATE = "openft_sqlite_immediate"


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and explicit BEGIN handling."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


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
        with self._readers() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction, committed when the block ends and rolled back if it raises."""
        with self._writers() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
