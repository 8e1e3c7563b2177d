"""Checkpoint permissions through the official SDK, on the training server: an admin key
(`openft keys create --admin`) shares an ``ft:`` model with a second project, which can then
chat with it and start a job from it, and sees nothing else of the owner's; revoking takes
effect on the next request; project keys are refused on the permissions routes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import openai
import pytest

from service.auth.service import AccessService, IssuedKey
from service.db.database import Database
from tests.e2e.test_fine_tune_end_to_end import QUESTION, TERMINAL, fact_lines, wait_for
from tests.e2e.test_responses import trained
from tests.support.server import ServerProcess


def issue_key(server: ServerProcess, project: str) -> IssuedKey:
    database = Database(f"sqlite:///{server.env['OPENFT_DATA_DIR']}/openft.db")
    issued = AccessService(database).issue_key(project)
    database.dispose()
    return issued


@pytest.fixture(scope="module")
def guest(training_server: ServerProcess) -> IssuedKey:
    return issue_key(training_server, "permissions-guest")


@pytest.fixture(scope="module")
def shared_model(training_server: ServerProcess) -> Iterator[str]:
    key = training_server.bootstrap_key()
    assert key is not None
    with openai.OpenAI(base_url=training_server.api_url, api_key=key, max_retries=0) as owner:
        yield trained(owner, fact_lines())


def ask(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    return answer.choices[0].message.content or ""


def test_a_shared_model_is_used_by_the_granted_project_until_revoked(
    training_server: ServerProcess,
    sdk: Callable[..., openai.OpenAI],
    trainer_client: openai.OpenAI,
    guest: IssuedKey,
    shared_model: str,
) -> None:
    admin = sdk(training_server.api_url, training_server.cli("keys", "create", "--admin"))
    other = sdk(training_server.api_url, guest.key)
    with pytest.raises(openai.NotFoundError):
        ask(other, shared_model)

    granted = admin.fine_tuning.checkpoints.permissions.create(
        shared_model, project_ids=[guest.project_id]
    )

    (permission,) = granted.data
    assert permission.object == "checkpoint.permission" and permission.id.startswith("cp_")
    assert permission.project_id == guest.project_id
    again = admin.fine_tuning.checkpoints.permissions.create(
        shared_model,
        project_ids=[guest.project_slug],  # OpenFT also takes the slug
    )
    assert [p.id for p in again.data] == [permission.id]  # granting twice keeps one grant
    ask(other, shared_model)  # the guest may call it now
    training = other.files.create(file=("train.jsonl", fact_lines()), purpose="fine-tune")
    job = other.fine_tuning.jobs.create(model=shared_model, training_file=training.id)
    assert job.model == shared_model
    done = wait_for(other, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    ask(other, done.fine_tuned_model or "")
    # Nothing else of the owner's: its jobs, files and events stay out of the guest's view.
    owners_job = trainer_client.fine_tuning.jobs.list(limit=100).data
    owner_job_ids = {j.id for j in owners_job}
    assert not owner_job_ids & {j.id for j in other.fine_tuning.jobs.list(limit=100).data}
    source = next(j for j in owners_job if j.fine_tuned_model == shared_model)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(source.id)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.list_events(source.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(source.training_file)
    assert shared_model not in [m.id for m in other.models.list().data]

    listed = admin.fine_tuning.checkpoints.permissions.list(shared_model)  # pages by last_id
    assert [p.id for p in listed] == [permission.id]
    filtered = admin.fine_tuning.checkpoints.permissions.list(shared_model, project_id="proj_x")
    assert filtered.data == []
    old_style = admin.fine_tuning.checkpoints.permissions.retrieve(shared_model)  # deprecated
    assert [p.id for p in old_style.data] == [permission.id] and old_style.has_more is False

    deleted = admin.fine_tuning.checkpoints.permissions.delete(
        permission.id, fine_tuned_model_checkpoint=shared_model
    )

    assert (deleted.id, deleted.deleted, deleted.object) == (
        permission.id, True, "checkpoint.permission",
    )  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        ask(other, shared_model)  # the next request
    with pytest.raises(openai.BadRequestError) as refused:
        other.fine_tuning.jobs.create(model=shared_model, training_file=training.id)
    assert refused.value.param == "model"
    ask(other, done.fine_tuned_model or "")  # what the guest trained stays its own

    third = issue_key(training_server, "permissions-third")
    deleting_ends_the_grants(
        admin, other, done.fine_tuned_model or "", third, sdk(training_server.api_url, third.key)
    )


def deleting_ends_the_grants(
    admin: openai.OpenAI,
    owner: openai.OpenAI,
    model: str,
    guest: IssuedKey,
    as_guest: openai.OpenAI,
) -> None:
    admin.fine_tuning.checkpoints.permissions.create(model, project_ids=[guest.project_id])
    ask(as_guest, model)
    owner.models.delete(model)
    with pytest.raises(openai.NotFoundError):
        ask(as_guest, model)
    with pytest.raises(openai.NotFoundError):
        admin.fine_tuning.checkpoints.permissions.list(model)


def test_project_keys_and_unknown_names_are_refused(
    training_server: ServerProcess,
    sdk: Callable[..., openai.OpenAI],
    trainer_client: openai.OpenAI,
    guest: IssuedKey,
    shared_model: str,
) -> None:
    permissions = trainer_client.fine_tuning.checkpoints.permissions
    with pytest.raises(openai.AuthenticationError) as refused:
        permissions.create(shared_model, project_ids=[guest.project_id])
    assert "insufficient permissions" in refused.value.message
    with pytest.raises(openai.AuthenticationError):
        permissions.retrieve(shared_model)
    with pytest.raises(openai.AuthenticationError):
        permissions.delete("cp_" + "Z" * 24, fine_tuned_model_checkpoint=shared_model)

    admin = sdk(training_server.api_url, training_server.cli("keys", "create", "--admin"))
    with pytest.raises(openai.NotFoundError) as unknown:
        admin.fine_tuning.checkpoints.permissions.create(
            "ft:tiny-chat:nobody::ZZZZZZZZ", project_ids=[guest.project_id]
        )
    assert unknown.value.param == "fine_tuned_model_checkpoint"
    with pytest.raises(openai.NotFoundError) as no_project:
        admin.fine_tuning.checkpoints.permissions.create(shared_model, project_ids=["proj_none"])
    assert no_project.value.param == "project_ids[0]"
    with pytest.raises(openai.NotFoundError):
        admin.fine_tuning.checkpoints.permissions.delete(
            "cp_" + "Z" * 24, fine_tuned_model_checkpoint=shared_model
        )
    with pytest.raises(openai.AuthenticationError) as not_a_project_key:
        admin.models.list()  # an admin key is no project's key
    assert not_a_project_key.value.code == "invalid_api_key"
    assert json.dumps(not_a_project_key.value.body).count("sk-openft-admin-") == 0
