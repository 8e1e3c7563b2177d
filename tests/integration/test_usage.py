"""Durable usage rows on SQLite and PostgreSQL: one row per project, model and hour, added to."""

from __future__ import annotations

from service.deps import AppState
from service.settings import BaseModelConfig
from service.usage import HOUR, add_usage, report

T0 = 1_790_000_000 // HOUR * HOUR


def test_usage_adds_up_per_hour_and_reports_per_model_with_cost(state: AppState) -> None:
    issued = state.access.issue_key("acme")
    rows = [
        ("ft:tiny-chat:acme::a", T0 + 10, {"requests": 1, "prompt_tokens": 100}),
        ("ft:tiny-chat:acme::a", T0 + 20, {"requests": 1, "completion_tokens": 50}),
        ("ft:tiny-chat:acme::a", T0 + HOUR + 5, {"requests": 2, "prompt_tokens": 10}),
        ("ft:tiny-chat:acme::a", T0 + 30, {"trained_tokens": 4000, "training_seconds": 1800.0}),
        ("tiny-chat", T0 + 40, {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3}),
    ]
    for model, at, counts in rows:
        with state.db.write() as session:
            add_usage(
                session,
                project_id=issued.project_id,
                model=model,
                base_model="tiny-chat",
                at=at,
                **counts,  # type: ignore[arg-type]
            )

    with state.db.read() as session:
        lines = report(session, since=T0, until=T0 + 2 * HOUR, project="acme")
        first_hour = report(session, since=T0, until=T0 + HOUR)

    by_model = {line.model: line for line in lines}
    tuned = by_model["ft:tiny-chat:acme::a"]
    assert (tuned.requests, tuned.prompt_tokens, tuned.completion_tokens) == (4, 110, 50)
    assert (tuned.trained_tokens, tuned.training_seconds) == (4000, 1800.0)
    assert {line.model: line.requests for line in first_hour} == {
        "ft:tiny-chat:acme::a": 2,
        "tiny-chat": 1,
    }
    prices = BaseModelConfig(
        name="tiny-chat",
        path="/models/tiny",
        input_price_per_1m_tokens=1.0,
        output_price_per_1m_tokens=2.0,
        training_price_per_1m_tokens=3.0,
        accelerator_price_per_hour=4.0,
    )
    expected = (110 * 1.0 + 50 * 2.0 + 4000 * 3.0) / 1e6 + 0.5 * 4.0
    assert tuned.cost(prices) == expected
    assert tuned.cost(BaseModelConfig(name="tiny-chat", path="/m")) is None
