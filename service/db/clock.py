"""The database's clock: the one clock every API process and worker shares (leases, deliveries)."""

from __future__ import annotations

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, func, literal_column, select
from sqlalchemy.orm import Session


def now_in_sql(dialect: str) -> ColumnElement[int]:
    """Seconds since the epoch by the database's clock, as an expression (for a statement that
    reads the clock and writes in one round trip)."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", func.clock_timestamp())), BigInteger)
    return cast(func.strftime("%s", literal_column("'now'")), Integer)


def database_now(session: Session) -> int:
    """Seconds since the epoch by the database's clock."""
    return int(session.execute(select(now_in_sql(session.get_bind().dialect.name))).scalar_one())
