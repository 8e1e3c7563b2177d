"""A scratch PostgreSQL database for a benchmark, on the server the tests use."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_DSN = os.environ.get(
    "OPENFT_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


@contextmanager
def scratch_database(label: str) -> Iterator[tuple[str, str]]:
    """An empty database, as (SQLAlchemy URL, libpq DSN); dropped afterwards."""
    name = f"openft_bench_{label}_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        host, port, user = admin.info.host, admin.info.port, admin.info.user
    try:
        yield (
            f"postgresql+psycopg://{user}@{host}:{port}/{name}",
            f"host={host} port={port} user={user} dbname={name}",
        )
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
