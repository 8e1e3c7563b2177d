"""Durable usage rows on SQLite and PostgreSQL: one row per project, model and hour, added to."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from service.app import AppState
from service.auth.principal import Principal
from service.db.models import FineTuningJob
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest
from service.settings import BaseModelConfig
from service.usage import HOUR, WRITE_EVERY_S, UsageWriter, add_usage, report

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


def test_served_requests_are_written_together_off_their_path(state: AppState) -> None:
    issued = state.access.issue_key("acme")

    def totals() -> dict[str, tuple[int, int, int]]:
        with state.db.read() as session:
            lines = report(session, since=0, until=2**40, project="acme")
        return {line.model: (line.requests, line.prompt_tokens, line.completion_tokens)
                for line in lines}  # fmt: skip

    async def serve() -> list[dict[str, tuple[int, int, int]]]:
        writer = UsageWriter(state.db)
        seen = []
        for i in range(50):
            model = "tiny-chat" if i % 2 else "ft:tiny-chat:acme::a"
            writer.add(project_id=issued.project_id, model=model, base_model="tiny-chat",
                       prompt=3, completion=i)  # fmt: skip
        seen.append(totals())  # counted, not yet written: nothing on the requests' path
        await writer.flush()
        seen.append(totals())
        writer.add(project_id=issued.project_id, model="tiny-chat", base_model="tiny-chat",
                   prompt=1, completion=1)  # fmt: skip
        await asyncio.sleep(WRITE_EVERY_S * 2.5)  # written by the timer, nobody asking
        seen.append(totals())
        writer.add(project_id=issued.project_id, model="tiny-chat", base_model="tiny-chat",
                   prompt=1, completion=1)  # fmt: skip
        await writer.aclose()  # shutdown writes what is left
        seen.append(totals())
        return seen

    before, flushed, timed, closed = asyncio.run(serve())

    assert before == {}
    odd, even = sum(range(1, 50, 2)), sum(range(0, 50, 2))
    assert flushed == {"tiny-chat": (25, 75, odd), "ft:tiny-chat:acme::a": (25, 75, even)}
    assert timed["tiny-chat"] == (26, 76, odd + 1)
    assert closed["tiny-chat"] == (27, 77, odd + 2)


def test_counts_a_failed_write_could_not_store_wait_for_the_next(state: AppState) -> None:
    issued = state.access.issue_key("acme")
    writer = UsageWriter(state.db)
    real_write = writer._write
    failures = iter([DatabaseDown("the database is restarting")])

    def flaky(taken: object) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_write(taken)  # type: ignore[arg-type]

    writer._write = flaky  # type: ignore[method-assign]

    async def serve() -> None:
        for _ in range(3):
            writer.add(project_id=issued.project_id, model="tiny-chat", base_model="tiny-chat",
                       prompt=2, completion=1)  # fmt: skip
        await writer.flush()  # fails: the counts stay
        writer.add(project_id=issued.project_id, model="tiny-chat", base_model="tiny-chat",
                   prompt=2, completion=1)  # fmt: skip
        await writer.aclose()

    asyncio.run(serve())

    with state.db.read() as session:
        (line,) = report(session, since=0, until=2**40, project="acme")
    assert (line.requests, line.prompt_tokens, line.completion_tokens) == (4, 8, 4)


class DatabaseDown(Exception):
    pass
