"""The database's clock: the one clock every API process and worker shares (leases, deliveries)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def database_now(session: Session) -> int:
    """Seconds since the epoch by the database's clock."""
    if session.get_bind().dialect.name == "postgresql":
        return int(
            session.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar_one()
        )
    return int(session.execute(text("SELECT CAST(strftime('%s', 'now') AS INTEGER)")).scalar_one())
