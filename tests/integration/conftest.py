"""Integration fixtures: a migrated database of each kind and the services over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import AppState, build_state
from service.db import migrate
from service.settings import Settings


@pytest.fixture
def state(empty_database_url: str, tmp_path: Path) -> Iterator[AppState]:
    """Services over a freshly migrated database (SQLite and PostgreSQL) and a local blob dir."""
    wired = build_state(Settings(data_dir=tmp_path / "data", database_url=empty_database_url))
    migrate.upgrade(wired.db)
    yield wired
    wired.access.close()
    wired.db.dispose()
