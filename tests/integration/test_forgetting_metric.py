"""The forgetting check's metric and job field, read from SQLite and PostgreSQL at scrape time."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from service.app import AppState
from service.auth.principal import Principal
from service.db.models import FineTuningJob
from service.files.upload import ReceivedUpload
from service.jobs.schemas import CreateJobRequest

METRIC = "openft_job_forgetting_relative_increase"
CHAT = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


def findings(rise: float) -> dict[str, Any]:
    check = {
        "reference_examples": 24,
        "base_loss": 2.0,
        "fine_tuned_loss": 2.0 * (1 + rise),
        "relative_increase": rise,
        "threshold": 0.1,
        "warning": rise > 0.1,
    }
    return {"forgetting": check}


def jobs(state: AppState, slug: str, n: int) -> tuple[Principal, list[str]]:
    issued = state.access.issue_key(slug)
    who = Principal(issued.project_id, issued.project_slug, issued.key_id)
    blob = state.blobs.stage()
    blob.write(CHAT * 10)
    training = state.files.create(who, ReceivedUpload(fields={"purpose": "fine-tune"}, blob=blob))
    request = CreateJobRequest(model="tiny-chat", training_file=training.id)
    return who, [state.jobs.create(who, request).id for _ in range(n)]


def finish(state: AppState, job_id: str, openft: dict[str, Any] | None) -> None:
    with state.db.write() as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(status="succeeded", finished_at=2000, openft=openft)
        )


def scraped(state: AppState, name: str = METRIC) -> dict[tuple[str, ...], float]:
    text = generate_latest(state.metrics.registry).decode()
    return {
        (s.labels["base_model"], s.labels["project"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_the_newest_checked_job_of_each_base_model_and_project_is_exported(
    state: AppState,
) -> None:
    who, (older, newer, unchecked, running) = jobs(state, "acme", 4)
    _, (other,) = jobs(state, "globex", 1)
    finish(state, older, findings(0.5))
    finish(state, newer, findings(0.04))
    finish(state, unchecked, None)  # a base model without a reference set: no figure
    with state.db.write() as session:
        session.execute(
            update(FineTuningJob).where(FineTuningJob.id == running).values(openft=findings(0.9))
        )
    finish(state, other, findings(0.2))

    assert scraped(state) == {("tiny-chat", "acme"): 0.04, ("tiny-chat", "globex"): 0.2}
    assert scraped(state, "openft_job_forgetting_threshold") == {
        ("tiny-chat", "acme"): 0.1,
        ("tiny-chat", "globex"): 0.1,
    }
    job = state.jobs.retrieve(who, newer)
    assert job.openft is not None and job.openft.forgetting is not None
    assert job.openft.forgetting.relative_increase == 0.04
    assert job.openft.forgetting.warning is False
    assert state.jobs.retrieve(who, unchecked).openft is None


def test_a_check_on_answers_exports_the_share_lost_and_says_its_measure(
    state: AppState,
) -> None:
    _, (on_loss,) = jobs(state, "acme", 1)
    _, (on_answers,) = jobs(state, "initech", 1)
    finish(state, on_loss, findings(0.04))  # stored before answers were checked: loss only
    check = findings(1.2)["forgetting"] | {
        "measure": "answers", "known_answers": 20, "kept_answers": 19, "answers_lost": 0.05,
        "warning": False,
    }  # fmt: skip
    finish(state, on_answers, {"forgetting": check})

    assert scraped(state, "openft_job_forgetting_answers_lost") == {("tiny-chat", "initech"): 0.05}
    text = generate_latest(state.metrics.registry).decode()
    measures = {
        (s.labels["project"], s.labels["measure"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "openft_job_forgetting_threshold"
    }
    assert measures == {("acme", "loss"), ("initech", "answers")}
