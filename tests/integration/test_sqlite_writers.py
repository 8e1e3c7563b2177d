"""SQLite write transactions start with BEGIN IMMEDIATE, so concurrent writers queue, not fail."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select

from service.db import migrate
from service.db.database import Database
from service.db.models import Project


def test_concurrent_read_then_write_transactions_do_not_deadlock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'openft.db'}"
    migrate.upgrade(Database(url))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        database = Database(url)  # its own engine, as another process would have
        try:
            for i in range(20):
                with database.write() as session:
                    # Reading first takes a SHARED lock; a DEFERRED transaction would then fail
                    # with "database is locked" when two of them try to upgrade to a write lock.
                    count = len(session.scalars(select(Project.seq)).all())
                    session.add(Project(id=f"proj_{n}_{i}", slug=f"s-{n}-{i}", created_at=count))
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with Database(url).read() as session:
        assert len(session.scalars(select(Project.seq)).all()) == 80
