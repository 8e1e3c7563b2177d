"""Stored chat completions through the official SDK (``store: true``, then list with metadata
filters, retrieve, update, messages, delete), per project, and distillation: ``openft distill``
turns them into a training file whose job teaches a student the teacher's answer.

Runs on the training server of ``test_fine_tune_end_to_end.py`` (the same session fixtures).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from service.auth.service import AccessService
from service.db.database import Database
from tests.e2e.test_fine_tune_end_to_end import QUESTION, TERMINAL, fact_lines, wait_for
from tests.support.server import ServerProcess, openft_command

ASK: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are the lighthouse keeper."},
    {"role": "user", "content": QUESTION},
]


@pytest.fixture(scope="module")
def teacher(training_server: ServerProcess) -> Iterator[str]:
    """A model that learnt the lighthouse's password (it answers and stops)."""
    key = training_server.bootstrap_key()
    assert key is not None
    with openai.OpenAI(base_url=training_server.api_url, api_key=key, max_retries=0) as client:
        training = client.files.create(file=("train.jsonl", fact_lines()), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
        done = wait_for(client, job.id, TERMINAL)
        assert done.status == "succeeded" and done.fine_tuned_model, done.error
        yield done.fine_tuned_model


@pytest.fixture
def other_project(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> openai.OpenAI:
    database = Database(f"sqlite:///{training_server.env['OPENFT_DATA_DIR']}/openft.db")
    key = AccessService(database).issue_key(f"stored-{uuid.uuid4().hex[:8]}").key
    database.dispose()
    return sdk(training_server.api_url, key)


def test_stored_completions_are_listed_filtered_updated_and_deleted(
    trainer_client: openai.OpenAI, teacher: str, other_project: openai.OpenAI
) -> None:
    client, run = trainer_client, uuid.uuid4().hex
    made = [
        client.chat.completions.create(
            model=teacher,
            messages=ASK,
            temperature=0,
            max_tokens=24,
            store=True,
            metadata={"run": run, "kind": kind},
        )
        for kind in ("a", "b", "a")
    ]
    unstored = client.chat.completions.create(
        model=teacher, messages=ASK, temperature=0, max_tokens=24, metadata={"run": run}
    )

    listed = client.chat.completions.list(metadata={"run": run})
    assert [c.id for c in listed.data] == [c.id for c in reversed(made)]  # newest first
    assert unstored.id not in {c.id for c in listed.data}
    kind_a = client.chat.completions.list(metadata={"run": run, "kind": "a"}, order="asc")
    assert [c.id for c in kind_a.data] == [made[0].id, made[2].id]
    paged = client.chat.completions.list(metadata={"run": run}, limit=2)
    assert paged.has_more and len(paged.data) == 2
    rest = client.chat.completions.list(metadata={"run": run}, limit=2, after=paged.data[-1].id)
    assert [c.id for c in rest.data] == [made[0].id] and not rest.has_more
    assert client.chat.completions.list(model="tiny-chat", metadata={"run": run}).data == []

    stored = client.chat.completions.retrieve(made[1].id)
    assert stored.choices[0].message.content == made[1].choices[0].message.content
    assert stored.model == teacher and stored.metadata == {"run": run, "kind": "b"}
    assert stored.usage is not None and made[1].usage is not None
    assert stored.usage.total_tokens == made[1].usage.total_tokens
    messages = client.chat.completions.messages.list(made[1].id)
    assert [(m.role, m.content) for m in messages.data] == [(m["role"], m["content"]) for m in ASK]
    assert [m.id for m in messages.data] == [f"{made[1].id}-0", f"{made[1].id}-1"]

    updated = client.chat.completions.update(made[1].id, metadata={"run": run, "kind": "c"})
    assert updated.metadata == {"run": run, "kind": "c"}
    assert len(client.chat.completions.list(metadata={"run": run, "kind": "c"}).data) == 1

    # another project sees none of it: every route answers as for an id that never existed
    with pytest.raises(openai.NotFoundError) as hidden:
        other_project.chat.completions.retrieve(made[1].id)
    assert hidden.value.body["param"] == "completion_id"  # type: ignore[index]
    assert other_project.chat.completions.list(metadata={"run": run}).data == []
    with pytest.raises(openai.NotFoundError):
        other_project.chat.completions.delete(made[1].id)
    with pytest.raises(openai.NotFoundError):
        other_project.chat.completions.messages.list(made[1].id)

    deleted = client.chat.completions.delete(made[1].id)
    assert deleted.deleted and deleted.object == "chat.completion.deleted"
    with pytest.raises(openai.NotFoundError) as gone:
        client.chat.completions.retrieve(made[1].id)
    assert gone.value.body["code"] == "not_found"  # type: ignore[index]


def test_a_streamed_completion_is_stored_whole_with_its_usage(
    trainer_client: openai.OpenAI, teacher: str
) -> None:
    run = uuid.uuid4().hex
    stream = trainer_client.chat.completions.create(
        model=teacher, messages=ASK, temperature=0, max_tokens=24, store=True, stream=True,
        metadata={"run": run},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert all(c.usage is None for c in chunks)  # not asked for: not sent, yet stored
    (stored,) = trainer_client.chat.completions.list(metadata={"run": run}).data
    assert stored.id == chunks[0].id and stored.choices[0].message.content == text
    assert stored.usage is not None and stored.usage.completion_tokens > 0


def test_bad_metadata_and_unknown_ids_are_clear_4xx(
    trainer_client: openai.OpenAI, teacher: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        trainer_client.chat.completions.create(
            model=teacher, messages=ASK, store=True, metadata={"k": "v" * 513}
        )
    assert refused.value.body["param"] == "metadata.k"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as cursor:
        trainer_client.chat.completions.list(after="chatcmpl-nope")
    assert cursor.value.body["param"] == "after"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as only_metadata:
        trainer_client.post(
            "/chat/completions/chatcmpl-nope", body={"model": "x"}, cast_to=httpx.Response
        )
    assert only_metadata.value.body["param"] == "model"  # type: ignore[index]


def test_distilling_stored_answers_teaches_a_student_the_teachers_answer(
    training_server: ServerProcess, trainer_client: openai.OpenAI, teacher: str
) -> None:
    client, task = trainer_client, uuid.uuid4().hex
    teacher_said = set()
    for _ in range(12):  # OpenAI's minimum training file is 10 examples
        answer = client.chat.completions.create(
            model=teacher, messages=ASK, temperature=0, max_tokens=24, store=True,
            metadata={"task": task},
        )  # fmt: skip
        teacher_said.add(answer.choices[0].message.content)
    client.chat.completions.create(  # another task's: not distilled
        model=teacher, messages=ASK, max_tokens=24, store=True, metadata={"task": "other"}
    )
    key = training_server.bootstrap_key()
    assert key is not None

    done = subprocess.run(
        [*openft_command(), "distill", "--model", teacher, "--metadata", f"task={task}",
         "--base-url", training_server.api_url, "--api-key", key],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    file_id = done.stdout.strip()
    assert "Wrote 12 examples (12 chat completions, 0 responses" in done.stderr
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    assert len(lines) == 12
    assert {line["messages"][-1]["content"] for line in lines} == teacher_said
    assert all(line["messages"][:-1] == ASK for line in lines)
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=file_id)
    trained = wait_for(client, job.id, TERMINAL)
    assert trained.status == "succeeded" and trained.fine_tuned_model, trained.error
    student = client.chat.completions.create(
        model=trained.fine_tuned_model, messages=ASK, temperature=0, max_tokens=24
    )
    assert student.choices[0].message.content in teacher_said
