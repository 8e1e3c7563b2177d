"""Durable usage: one row per project, model and hour, added to as requests and jobs finish.

Prometheus counters reset when a process restarts; these rows do not, so chargeback and the
``openft usage report`` read them. The gateway adds each served request, the worker each finished
job (trained tokens and seconds). Costs are computed from them with the base model's prices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.db.models import Project, UsageHour
from service.prices import cost_of
from service.settings import BaseModelConfig

HOUR = 3600
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "trained_tokens", "training_seconds")


def add_usage(
    session: Session,
    *,
    project_id: str,
    model: str,
    base_model: str,
    at: float | None = None,
    requests: int = 0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    trained_tokens: int = 0,
    training_seconds: float = 0.0,
) -> None:
    """Add to the (project, model, hour) row, creating it: one statement, safe under concurrency."""
    hour = int((time.time() if at is None else at) // HOUR * HOUR)
    values = {
        "project_id": project_id,
        "model": model,
        "base_model": base_model,
        "hour": hour,
        "requests": requests,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "trained_tokens": trained_tokens,
        "training_seconds": training_seconds,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(UsageHour).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["project_id", "model", "hour"],
        set_={name: getattr(UsageHour, name) + statement.excluded[name] for name in COUNTERS},
    )
    session.execute(statement)


@dataclass(frozen=True)
class UsageLine:
    project: str
    model: str
    base_model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    trained_tokens: int
    training_seconds: float

    def cost(self, price: BaseModelConfig | None) -> float | None:
        """Dollars at the base model's prices; None when it has no price at all."""
        if price is None or price.priced is False:
            return None
        return cost_of(
            price,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            trained_tokens=self.trained_tokens,
            training_seconds=self.training_seconds,
        ).total


def report(
    session: Session, *, since: int, until: int, project: str | None = None
) -> list[UsageLine]:
    """Usage summed per project and model over the hours in [since, until)."""
    sums = [func.sum(getattr(UsageHour, name)) for name in COUNTERS]
    query = (
        select(Project.slug, UsageHour.model, UsageHour.base_model, *sums)
        .join(Project, Project.id == UsageHour.project_id)
        .where(UsageHour.hour >= since, UsageHour.hour < until)
        .group_by(Project.slug, UsageHour.model, UsageHour.base_model)
        .order_by(Project.slug, UsageHour.model)
    )
    if project is not None:
        query = query.where(Project.slug == project)
    return [
        UsageLine(
            row[0],
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
            float(row[7]),
        )
        for row in session.execute(query)
    ]
