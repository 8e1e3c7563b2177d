"""The keys an API process has seen good, remembered so that a request's key check costs no query,
and every process's copy dropped the moment any key or project limit changes anywhere.

A change is announced after its transaction commits: on SQLite (one host) by replacing a stamp
file beside the database, which every check compares with one ``stat``; on PostgreSQL by
``NOTIFY openft_keys``, which a listener thread in each process hears. While that listener is
not connected nothing is cached, and an entry never outlives ``OPENFT_KEY_CACHE_SECONDS`` (the
bound if a notification were lost). Unknown and revoked keys are never cached: each is checked
against the database.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL

from service.auth.principal import Principal
from service.db.database import Database

log = logging.getLogger(__name__)
CHANNEL = "openft_keys"
LISTEN_RECONNECT_S = 1.0
MAX_ENTRIES = 100_000


class KeyChanges:
    """Announces key changes and tells whether any happened since a stamp was taken."""

    def __init__(self, db: Database) -> None:
        self._db = db
        url = db.engine.url
        self._postgres = db.dialect == "postgresql"
        database = url.database if url.get_backend_name() == "sqlite" else None
        on_disk = database not in (None, "", ":memory:")
        self._stamp_file = Path(f"{database}-keys-changed") if on_disk else None
        self._local = itertools.count()  # changes made by this process
        self._local_stamp = next(self._local)
        self._listener: _Listener | None = None

    def announce(self) -> None:
        """Say (after the change's commit) that keys or their projects' limits changed."""
        self._local_stamp = next(self._local)
        if self._postgres:
            with self._db.write() as session:
                session.execute(text(f"NOTIFY {CHANNEL}"))
        elif self._stamp_file is not None:
            staged = self._stamp_file.with_name(f"{self._stamp_file.name}.{os.getpid()}")
            staged.write_text(str(time.time_ns()))
            staged.replace(self._stamp_file)  # a new inode: every reader sees a new stamp

    def stamp(self) -> object | None:
        """What changes have happened, as a comparable value; None when this process cannot
        know (its PostgreSQL listener is not connected): then nothing may be trusted."""
        if self._postgres:
            if self._listener is None:
                self._listener = _Listener(self._db.engine.url)
            heard = self._listener.heard
            return None if heard is None else (self._local_stamp, heard)
        if self._stamp_file is None:
            return self._local_stamp
        try:
            found = os.stat(self._stamp_file)
        except FileNotFoundError:
            return self._local_stamp, None
        return self._local_stamp, found.st_ino, found.st_mtime_ns

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()


class _Listener:
    """A thread holding ``LISTEN openft_keys`` on its own connection; ``heard`` counts
    notifications and reconnections (None while not connected)."""

    def __init__(self, url: URL) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.heard: int | None = None
        self._count = itertools.count()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="openft-key-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _listen(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.heard = next(self._count)  # anything missed while away: new stamp
                    while not self._stopped.is_set():
                        for _ in connection.notifies(timeout=1.0):
                            self.heard = next(self._count)
            except psycopg.Error as exc:
                log.warning("listening for key changes failed (%r); keys are not cached", exc)
            self.heard = None
            self._stopped.wait(LISTEN_RECONNECT_S)


class KeyCache:
    """Principals of good keys by key hash, valid while no key change is announced and for at
    most ``max_age_s``."""

    def __init__(self, changes: KeyChanges, max_age_s: float) -> None:
        self._changes = changes
        self._max_age_s = max_age_s
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._stamp: object | None = None

    def get(self, key_hash: str) -> Principal | None:
        if self._max_age_s <= 0:
            return None
        stamp = self._changes.stamp()
        if stamp is None or stamp != self._stamp:
            self._entries.clear()
            self._stamp = stamp
            return None
        found = self._entries.get(key_hash)
        if found is None or time.monotonic() - found[1] > self._max_age_s:
            return None
        return found[0]

    def stamp(self) -> object | None:
        """The changes seen so far, to take before a database check (None when caching is off:
        no listener is started for a process that caches nothing)."""
        return self._changes.stamp() if self._max_age_s > 0 else None

    def put(self, key_hash: str, principal: Principal, stamp: object | None) -> None:
        """Remember a key checked good against the database, under the stamp taken before that
        check (a change announced meanwhile makes the stamp stale and the entry unused)."""
        if self._max_age_s <= 0 or stamp is None or stamp != self._stamp:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (principal, time.monotonic())
