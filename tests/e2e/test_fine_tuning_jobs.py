"""The Fine-tuning jobs API without training: create checks, list, retrieve, cancel, events.

These run against API-only servers (``--workers 0``) on SQLite and PostgreSQL, so jobs stay
where the test puts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from service.auth.service import IssuedKey
from tests.e2e.conftest import CurlResult

Curl = Callable[..., CurlResult]


def chat_lines(n: int) -> bytes:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    return (json.dumps(row) + "\n").encode() * n


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", chat_lines(10)), purpose="fine-tune").id


def test_create_returns_the_openai_shape(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training_file,
        suffix="support_v1",
        seed=7,
        metadata={"team": "support"},
    )

    assert job.id.startswith("ftjob-") and len(job.id) == len("ftjob-") + 24
    assert (job.object, job.status, job.model) == (
        "fine_tuning.job",
        "validating_files",
        "tiny-chat",
    )
    assert (job.training_file, job.validation_file, job.seed) == (training_file, None, 7)
    assert job.fine_tuned_model is None and job.finished_at is None and job.result_files == []
    assert job.hyperparameters.n_epochs == "auto"  # type: ignore[union-attr]
    assert job.method.type == "supervised"  # type: ignore[union-attr]
    assert job.metadata == {"team": "support"}
    assert job.user_provided_suffix == "support_v1"  # type: ignore[attr-defined]
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages == [
        f"Validating training file: {training_file}",
        f"Created fine-tuning job: {job.id}",
    ]


def test_legacy_and_method_hyperparameters(client: openai.OpenAI, training_file: str) -> None:
    legacy = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training_file, hyperparameters={"n_epochs": 2}
    )
    method = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
    )

    assert legacy.hyperparameters.n_epochs == 2  # type: ignore[union-attr]
    assert legacy.hyperparameters.batch_size == "auto"  # type: ignore[union-attr]
    assert method.method.supervised.hyperparameters.batch_size == 4  # type: ignore[union-attr]


RFT_GRADER = {
    "type": "string_check",
    "name": "answer",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "ilike",
}


@pytest.mark.parametrize(
    ("changes", "param", "fragment"),
    [
        ({"model": "gpt-nonexistent"}, "model", "Model gpt-nonexistent is not available"),
        ({"training_file": "file-nope"}, "training_file", "invalid training_file: file-nope"),
        ({"validation_file": "file-nope"}, "validation_file", "invalid validation_file: file-nope"),
        ({"suffix": "has space"}, "suffix", "does not match"),
        ({"suffix": "x" * 65}, "suffix", "does not match"),
        (
            {"hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
            "0 is less than the minimum of 1",
        ),
        (
            {"hyperparameters": {"n_epochs": 51}},
            "hyperparameters.n_epochs",
            "greater than the maximum of 50",
        ),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size", "maximum of 256"),
        (
            {"hyperparameters": {"learning_rate_multiplier": 0}},
            "hyperparameters.learning_rate_multiplier",
            "minimum of 0",
        ),
        (
            {"hyperparameters": {"n_epochs": "many"}},
            "hyperparameters.n_epochs",
            "is not of type 'integer'",
        ),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 properties"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            "method.dpo.hyperparameters.beta",
            "0 is less than or equal to the minimum of 0",
        ),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
            "method.dpo.hyperparameters.beta",
            "greater than the maximum of 2",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 1}}}},
            "method.supervised.hyperparameters.beta",
            "Unrecognized request argument supplied",
        ),
        (
            {"method": {"type": "reinforcement"}},
            "method.reinforcement",
            "Missing required parameter: 'method.reinforcement'",
        ),
        (
            {"method": {"type": "reinforcement", "reinforcement": {"grader": RFT_GRADER}}},
            "validation_file",
            "Reinforcement fine-tuning needs a validation_file",
        ),
        ({"seed": -1}, "seed", "-1 is less than the minimum of 0"),
    ],
)
def test_create_is_refused_in_openai_words(
    client: openai.OpenAI, training_file: str, changes: dict[str, Any], param: str, fragment: str
) -> None:
    arguments = {"model": "tiny-chat", "training_file": training_file, **changes}

    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(**arguments)

    assert error.value.param == param
    assert fragment in error.value.message
    assert client.fine_tuning.jobs.list().data == []


@pytest.mark.parametrize(
    ("reinforcement", "param", "fragment"),
    [
        (
            {"grader": {**RFT_GRADER, "operation": "neq"}},
            "method.reinforcement.grader.operation",
            "'eq', 'ne', 'like' or 'ilike'",
        ),
        (
            {"grader": {**RFT_GRADER, "type": "label_model"}},
            "method.reinforcement.grader.type",
            "only inside a multi grader",
        ),
        (
            {"grader": RFT_GRADER, "hyperparameters": {"compute_multiplier": 11}},
            "method.reinforcement.hyperparameters.compute_multiplier",
            "greater than the maximum of 10",
        ),
        (
            {"grader": RFT_GRADER, "hyperparameters": {"reasoning_effort": "extreme"}},
            "method.reinforcement.hyperparameters.reasoning_effort",
            "'extreme' is not one of",
        ),
        (
            {"grader": RFT_GRADER, "hyperparameters": {"beta": 0.1}},
            "method.reinforcement.hyperparameters.beta",
            "Unrecognized request argument supplied",
        ),
        (
            {"grader": RFT_GRADER, "response_format": {"type": "json_object"}},
            "method.reinforcement.response_format",
            "json_schema",
        ),
    ],
)
def test_a_reinforcement_job_is_refused_in_openai_words(
    client: openai.OpenAI,
    training_file: str,
    reinforcement: dict[str, Any],
    param: str,
    fragment: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(
            model="tiny-chat",
            training_file=training_file,
            validation_file=training_file,
            method={"type": "reinforcement", "reinforcement": reinforcement},  # type: ignore[typeddict-item]
        )

    assert error.value.param == param
    assert fragment in error.value.message
    assert client.fine_tuning.jobs.list().data == []


def test_a_reinforcement_job_echoes_its_method_as_openai_does(
    client: openai.OpenAI, training_file: str
) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "strict": True, "schema": {"type": "object"}},
    }
    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training_file,
        validation_file=training_file,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": RFT_GRADER,  # type: ignore[typeddict-item]
                "hyperparameters": {"eval_interval": 3, "reasoning_effort": "low"},
                "response_format": response_format,  # type: ignore[typeddict-unknown-key]
            },
        },
    )
    method = client.fine_tuning.jobs.retrieve(job.id).method.model_dump()
    assert method["type"] == "reinforcement"
    assert method["reinforcement"]["grader"] == RFT_GRADER
    assert method["reinforcement"]["hyperparameters"] == {
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "n_epochs": "auto",
        "compute_multiplier": "auto",
        "eval_interval": 3,
        "eval_samples": "auto",
        "reasoning_effort": "low",
    }
    assert method["reinforcement"]["response_format"] == response_format
    client.fine_tuning.jobs.cancel(job.id)


def test_model_not_available_code(client: openai.OpenAI, training_file: str) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)

    assert error.value.code == "model_not_available"


def test_a_file_of_another_purpose_is_refused(client: openai.OpenAI) -> None:
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")

    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model="tiny-chat", training_file=other.id)

    assert error.value.param == "training_file" and "purpose 'user_data'" in error.value.message


def test_list_is_newest_first_paginated_and_filters_on_metadata(
    client: openai.OpenAI, training_file: str
) -> None:
    ids = [
        client.fine_tuning.jobs.create(
            model="tiny-chat", training_file=training_file, metadata={"n": str(i % 2)}
        ).id
        for i in range(5)
    ]

    first = client.fine_tuning.jobs.list(limit=2)
    everything = [job.id for job in client.fine_tuning.jobs.list(limit=2)]
    odd = [job.id for job in client.fine_tuning.jobs.list(metadata={"n": "1"})]

    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more is True
    assert everything == ids[::-1]
    assert odd == [ids[3], ids[1]]


def test_events_paginate_newest_first(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)
    client.fine_tuning.jobs.cancel(job.id)

    page = client.fine_tuning.jobs.list_events(job.id, limit=1)
    everything = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1)]

    assert page.has_more is True and page.data[0].message == "Fine-tuning job cancelled"
    assert everything[-1] == f"Created fine-tuning job: {job.id}" and len(everything) == 3
    assert page.data[0].object == "fine_tuning.job.event" and page.data[0].id.startswith("ftevent-")


def test_cancel_before_training_and_twice(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)

    cancelled = client.fine_tuning.jobs.cancel(job.id)

    assert cancelled.status == "cancelled" and cancelled.finished_at is None
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as again:
        client.fine_tuning.jobs.cancel(job.id)
    assert "already finished with status 'cancelled'" in again.value.message


def test_deleting_the_training_file_of_a_waiting_job_fails_it(
    client: openai.OpenAI, training_file: str
) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)
    other = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=client.files.create(
            file=("other.jsonl", chat_lines(10)), purpose="fine-tune"
        ).id,
    )

    client.files.delete(training_file)

    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.param) == ("deleted_training_file", "training_file")
    assert failed.error.message == "The job failed because the training file was deleted"
    (event, *_) = client.fine_tuning.jobs.list_events(job.id, limit=1)
    assert (event.level, event.message) == ("error", failed.error.message)
    assert client.fine_tuning.jobs.retrieve(other.id).status == "validating_files"


def test_deleting_the_validation_file_of_a_waiting_job_fails_it(
    client: openai.OpenAI, training_file: str
) -> None:
    validation = client.files.create(file=("v.jsonl", chat_lines(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-chat", training_file=training_file, validation_file=validation.id
    )

    client.files.delete(validation.id)

    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.error is not None and failed.status == "failed"
    assert (failed.error.code, failed.error.param) == ("deleted_validation_file", "validation_file")


def test_pause_and_resume_a_waiting_job(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)

    paused = client.fine_tuning.jobs.pause(job.id)
    with pytest.raises(openai.BadRequestError) as twice:
        client.fine_tuning.jobs.pause(job.id)
    resumed = client.fine_tuning.jobs.resume(job.id)
    with pytest.raises(openai.BadRequestError) as again:
        client.fine_tuning.jobs.resume(job.id)

    assert (paused.status, resumed.status) == ("paused", "queued")
    assert twice.value.param == "fine_tuning_job_id"
    assert "cannot be paused" in twice.value.message
    assert "not paused, so it cannot be resumed" in again.value.message
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=2).data]
    assert events == ["Fine-tuning job resumed", "Fine-tuning job paused"]
    client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)


def test_a_job_without_checkpoints_lists_none(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training_file)

    page = client.fine_tuning.jobs.checkpoints.list(job.id)

    assert (page.data, page.has_more) == ([], False)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.checkpoints.list("ftjob-doesnotexist")


def test_unknown_job(client: openai.OpenAI) -> None:
    for attempt in (
        client.fine_tuning.jobs.retrieve,
        client.fine_tuning.jobs.cancel,
        client.fine_tuning.jobs.list_events,
    ):
        with pytest.raises(openai.NotFoundError) as error:
            attempt("ftjob-doesnotexist")
        assert error.value.param == "fine_tuning_job_id"


def test_other_projects_jobs_are_invisible(
    make_client: Callable[..., openai.OpenAI], new_project: Callable[[], IssuedKey]
) -> None:
    alice = make_client(new_project().key)
    bob = make_client(new_project().key)
    data = alice.files.create(file=("t.jsonl", chat_lines(10)), purpose="fine-tune")
    job = alice.fine_tuning.jobs.create(model="tiny-chat", training_file=data.id)

    assert bob.fine_tuning.jobs.list().data == []
    for attempt in (
        bob.fine_tuning.jobs.retrieve,
        bob.fine_tuning.jobs.cancel,
        bob.fine_tuning.jobs.pause,
        bob.fine_tuning.jobs.resume,
        bob.fine_tuning.jobs.list_events,
        bob.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError):
            attempt(job.id)
    with pytest.raises(openai.BadRequestError) as error:
        bob.fine_tuning.jobs.create(model="tiny-chat", training_file=data.id)
    assert error.value.param == "training_file"
    assert alice.fine_tuning.jobs.retrieve(job.id).status == "validating_files"


def test_models_lists_the_base_model(client: openai.OpenAI) -> None:
    models = client.models.list()

    assert "tiny-chat" in [m.id for m in models.data]
    assert client.models.retrieve("tiny-chat").owned_by == "system"
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("ft:tiny-chat:nobody::abcdefgh")
    assert error.value.code == "model_not_found"


def test_base_models_cannot_be_deleted_and_unknown_ones_are_not_found(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as base:
        client.models.delete("tiny-chat")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.delete("ft:tiny-chat:someone::abcdefgh")

    assert base.value.param == "model"
    assert unknown.value.code == "model_not_found"


def test_the_gateway_checks_before_it_forwards(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="ft:tiny-chat:x::abcdefgh", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError) as not_served:
        client.chat.completions.create(model="tiny-chat", messages=messages)  # type: ignore[arg-type]

    assert unknown.value.code == "model_not_found"
    assert not_served.value.status_code == 503
    assert "not served by this OpenFT node" in not_served.value.message


def test_chat_needs_a_model_and_a_json_object(curl: Curl, project: IssuedKey) -> None:
    missing = curl(
        "POST",
        "/v1/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"messages": []}',
        key=project.key,
    )
    not_json = curl(
        "POST",
        "/v1/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{oops",
        key=project.key,
    )

    assert missing.status == 400 and missing.json()["error"]["param"] == "model"
    assert not_json.status == 400 and "parse the JSON body" in not_json.json()["error"]["message"]
