"""Alembic on both databases: upgrade is idempotent, models match migrations, downgrade works."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from service.db import migrate
from service.db.database import Database


def test_upgrade_check_downgrade_upgrade(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        migrate.upgrade(database)
        migrate.upgrade(database)  # a second run is a no-op
        migrate.check(database)  # raises if models and migrations disagree
        assert {"projects", "api_keys", "files"} <= set(inspect(database.engine).get_table_names())

        command.downgrade(migrate.alembic_config(database), "base")
        assert "files" not in inspect(database.engine).get_table_names()

        migrate.upgrade(database)
        migrate.check(database)
    finally:
        database.dispose()
