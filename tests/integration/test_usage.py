"""Durable usage rows on SQLite and PostgreSQL: one row per project, model and hour, added to."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from service.app import AppState
from service.auth.principal import Principal
from service.db.models import FineTuningJob
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
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


def test_job_metrics_are_read_from_the_database_at_scrape_time(state: AppState) -> None:
    issued = state.access.issue_key("scrape")
    who = Principal(issued.project_id, issued.project_slug, issued.key_id)
    blob = state.blobs.stage()
    blob.write(
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        * 10
    )
    training = state.files.create(who, ReceivedUpload(fields={"purpose": "fine-tune"}, blob=blob))
    done, waiting = (
        state.jobs.create(who, CreateJobRequest(model="tiny-chat", training_file=training.id)).id
        for _ in range(2)
    )
    with state.db.write() as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == done)
            .values(status="succeeded", created_at=1000, finished_at=1090, trained_tokens=500)
        )
        add_usage(
            session,
            project_id=who.project_id,
            model="ft:x",
            base_model="tiny-chat",
            trained_tokens=500,
            training_seconds=80.0,
        )

    text = generate_latest(state.metrics.registry).decode()

    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("openft_jobs", (("status", "succeeded"),))] == 1
    assert values[("openft_jobs", (("status", "validating_files"),))] == 1
    assert values[("openft_job_duration_seconds_count", (("base_model", "tiny-chat"),))] == 1
    assert values[("openft_job_duration_seconds_sum", (("base_model", "tiny-chat"),))] == 90
    labels = (("base_model", "tiny-chat"), ("project", "scrape"))
    assert values[("openft_trained_tokens_total", labels)] == 500
    assert values[("openft_training_seconds_total", labels)] == 80
    assert values[("openft_queue_oldest_wait_seconds", ())] >= 0
    assert waiting
