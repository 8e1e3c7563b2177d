"""Projects never see each other's objects: a matrix generated from ``openapi/openapi.json``.

Project A (alice) holds one object of every kind: a file, an upload with a part, a job still
validating and a job that succeeded (with its ``ft:`` model, a checkpoint and an event, written
behind the API as a worker would), and usage rows. Project B (bob) then calls every operation of
the schema:

- every operation whose path names an object (``{file_id}``, ``{model}``, ...) with each of A's
  objects of that kind: ``404`` in OpenAI's envelope, and A's objects are unchanged afterwards;
- every list (and B's own objects, events and checkpoints): nothing of A's in them; ``after``
  cursors of A's objects: ``404``;
- every create call that refers to other objects (a training file, a model, a part): A's object
  gets the answer an object that does not exist gets, word for word;
- ``openft usage report --project B`` and ``OpenAI-Project: <A>`` show nothing of A either.

No body B receives mentions anything of A's (ids, file names, model names, the project, event
text) other than the id B itself sent. A new operation the matrix does not know fails
``test_the_matrix_covers_every_operation`` until it is added here.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from service.auth.service import IssuedKey
from service.completions.stored import stored_object
from service.db.database import Database
from service.db.models import FineTuningJob as JobRow
from service.db.models import FineTuningJobCheckpoint as CheckpointRow
from service.db.models import FineTuningJobEvent as EventRow
from service.db.models import StoredChatCompletion as CompletionRow
from service.db.models import StoredResponse as ResponseRow
from service.ids import new_checkpoint_id, new_event_id, new_output_item_id, new_response_id
from service.responses.request import parse_request
from service.responses.translate import message_item, response_object
from service.usage import add_usage
from tests.support import openai_spec
from tests.support.server import ServerProcess, openft_command

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(OPENAPI.read_text())
PATH_PARAMETER = re.compile(r"\{([^}]+)\}")
BASE_MODEL = "tiny-chat"

# Which of a project's objects each path parameter can name.
OBJECTS_BY_PATH_PARAMETER = {
    "file_id": ("file",),
    "upload_id": ("upload",),
    "fine_tuning_job_id": ("job", "succeeded_job"),
    "model": ("model", "checkpoint"),
    "response_id": ("response",),
    "completion_id": ("chat_completion",),
    "batch_id": ("batch",),
}
# Request bodies of operations on an object (other operations send none).
BODIES: dict[str, Callable[[Project], dict[str, Any]]] = {
    "POST /v1/uploads/{upload_id}/parts": lambda a: {"files": {"data": ("part", b"{}\n")}},
    "POST /v1/uploads/{upload_id}/complete": lambda a: {"json": {"part_ids": [a.ids["part"]]}},
    "POST /v1/chat/completions/{completion_id}": lambda a: {"json": {"metadata": {"k": "v"}}},
}
# The object kind an ``after`` cursor names, per list.
AFTER_KIND = {
    "/v1/files": "file",
    "/v1/fine_tuning/jobs": "job",
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints": "checkpoint_id",
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events": "event",
    "/v1/responses/{response_id}/input_items": "response_item",
    "/v1/chat/completions": "chat_completion",
    "/v1/chat/completions/{completion_id}/messages": "chat_message",
    "/v1/batches": "batch",
}
# Create calls whose body names other objects: (body field, object kind, body for B).
REFERENCES: dict[str, list[tuple[str, str]]] = {
    "POST /v1/fine_tuning/jobs": [
        ("training_file", "file"),
        ("validation_file", "file"),
        ("model", "model"),
        ("model", "checkpoint"),
    ],
    "POST /v1/chat/completions": [("model", "model"), ("model", "checkpoint")],
    "POST /v1/completions": [("model", "model"), ("model", "checkpoint")],
    "POST /v1/openft/evals": [("model", "model"), ("model", "checkpoint"), ("file", "file")],
    "POST /v1/responses": [
        ("model", "model"),
        ("model", "checkpoint"),
        ("previous_response_id", "response"),
    ],
    "POST /v1/openft/distillations": [("model", "model"), ("model", "checkpoint")],
    "POST /v1/responses/input_tokens": [
        ("model", "model"),
        ("model", "checkpoint"),
        ("previous_response_id", "response"),
    ],
    "POST /v1/batches": [("input_file_id", "batch_file")],
}
# Create calls that name no other object, and why.
NO_REFERENCES = {
    "POST /v1/files": "a new file from the request's bytes",
    "POST /v1/uploads": "a new upload from its declared size and name",
    "POST /v1/fine_tuning/alpha/graders/validate": "checks a grader; calls no model",
    "POST /v1/fine_tuning/alpha/graders/run": (
        "a judge model named inside the grader: test_a_grader_judged_by_another_projects_model"
    ),
}
# Ids that name nothing, in each kind's format.
UNKNOWN = {
    "file": "file-" + "Z" * 22,
    "upload": "upload_" + "Z" * 24,
    "part": "part_" + "Z" * 24,
    "job": "ftjob-" + "Z" * 24,
    "succeeded_job": "ftjob-" + "Y" * 24,
    "model": f"ft:{BASE_MODEL}:nobody:gone:ZZZZZZZZ",
    "checkpoint": f"ft:{BASE_MODEL}:nobody:gone:ZZZZZZZZ:ckpt-step-5",
    "checkpoint_id": "ftckpt_" + "Z" * 24,
    "event": "ftevent-" + "Z" * 24,
    "response": "resp_" + "0" * 50,
    "response_item": "msg_" + "0" * 50,
    "chat_completion": "chatcmpl-" + "0" * 32,
    "chat_message": "chatcmpl-" + "0" * 32 + "-0",
    "batch": "batch_" + "0" * 32,
    "batch_file": "file-" + "X" * 22,
}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def label(method: str, path: str) -> str:
    return f"{method} {path}"


def query_parameters(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


# Routes for admin keys only (checkpoint permissions): a project key gets a 401 whatever it names.
ADMIN_PATH = "/v1/fine_tuning/checkpoints/"
ADMIN_OPERATIONS = [(m, p, o) for m, p, o in operations() if p.startswith(ADMIN_PATH)]
OBJECT_OPERATIONS = [
    (m, p, o) for m, p, o in operations() if PATH_PARAMETER.search(p) and ADMIN_PATH not in p
]
COLLECTION_OPERATIONS = [(m, p, o) for m, p, o in operations() if not PATH_PARAMETER.search(p)]


@dataclass
class Project:
    issued: IssuedKey
    http: httpx.Client
    ids: dict[str, str] = field(default_factory=dict)  # object kind -> id (or model name)
    secrets: set[str] = field(default_factory=set)  # everything that must never reach others

    def call(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self.http.request(method, path, **options)


@pytest.fixture
def projects(
    server: ServerProcess,
    server_db: Database,
    new_project: Callable[[], IssuedKey],
    conformance: openai_spec.ConformanceRecorder,
) -> Iterator[tuple[Project, Project]]:
    def record(response: httpx.Response) -> None:
        response.read()
        if response.headers.get("content-type", "").startswith("application/json"):
            request = response.request
            conformance.record(
                request.method, request.url.path, response.status_code, response.json()
            )

    clients = []

    def project() -> Project:
        issued = new_project()
        http = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {issued.key}"},
            event_hooks={"response": [record]},
            timeout=60,
        )
        clients.append(http)
        return Project(issued, http, secrets={issued.project_id, issued.project_slug})

    alice, bob = project(), project()
    _fill(alice, server_db, "alice")
    _fill(bob, server_db, "bob")
    yield alice, bob
    for http in clients:
        http.close()


def _fill(owner: Project, db: Database, name: str) -> None:
    """One object of every kind, each named with a token no other project can produce."""
    token = secrets.token_hex(6)
    filename = f"{name}-train-{token}.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    content = (json.dumps(row) + "\n").encode() * 10
    file = _ok(
        owner.call(
            "POST", "/v1/files", files={"file": (filename, content)}, data={"purpose": "fine-tune"}
        )
    )
    upload_name = f"{name}-upload-{token}.jsonl"
    upload = _ok(
        owner.call(
            "POST",
            "/v1/uploads",
            json={
                "filename": upload_name,
                "purpose": "fine-tune",
                "bytes": 3,
                "mime_type": "text/jsonl",
            },
        )
    )
    part = _ok(
        owner.call("POST", f"/v1/uploads/{upload['id']}/parts", files={"data": ("part", b"{}\n")})
    )
    suffix, label_value = f"{name}{token}", f"{name}-label-{token}"
    job_body = {
        "model": BASE_MODEL,
        "training_file": file["id"],
        "suffix": suffix,
        "metadata": {"owner": label_value},
    }
    job = _ok(owner.call("POST", "/v1/fine_tuning/jobs", json=job_body))
    done = _ok(owner.call("POST", "/v1/fine_tuning/jobs", json=job_body))
    model = f"ft:{BASE_MODEL}:{owner.issued.project_slug}:{suffix}:{token[:8]}"
    checkpoint = _succeed(db, owner, done["id"], model, event=f"{name}-event-{token}")
    # A batch whose line calls another URL than its endpoint: it fails validation at once.
    line = {"custom_id": f"{name}-line-{token}", "method": "POST", "url": "/v1/completions",
            "body": {"model": BASE_MODEL, "prompt": "hi"}}  # fmt: skip
    batch_file = _ok(
        owner.call(
            "POST",
            "/v1/files",
            files={"file": (f"{name}-batch-{token}.jsonl", json.dumps(line).encode())},
            data={"purpose": "batch"},
        )
    )
    batch_body = {
        "input_file_id": batch_file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"owner": label_value},
    }
    batch = _ok(owner.call("POST", "/v1/batches", json=batch_body))
    owner.ids.update(
        file=file["id"],
        upload=upload["id"],
        part=part["id"],
        job=job["id"],
        succeeded_job=done["id"],
        model=model,
        batch=batch["id"],
        batch_file=batch_file["id"],
        **checkpoint,
    )
    owner.secrets |= {*owner.ids.values(), filename, upload_name, suffix, label_value, token}


def _succeed(db: Database, owner: Project, job_id: str, model: str, event: str) -> dict[str, str]:
    """What a worker leaves behind: a succeeded job, its model, a checkpoint, an event, usage."""
    now = int(time.time())
    checkpoint = {"checkpoint": f"{model}:ckpt-step-5", "checkpoint_id": new_checkpoint_id()}
    event_id = new_event_id()
    response = {"response": new_response_id(), "response_item": new_output_item_id("msg")}
    completion_id = "chatcmpl-" + secrets.token_hex(16)
    response |= {"chat_completion": completion_id, "chat_message": f"{completion_id}-0"}
    project_id = owner.issued.project_id
    with db.write() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(status="succeeded", fine_tuned_model=model, finished_at=now, trained_tokens=60)
        )
        session.add(
            CheckpointRow(
                id=checkpoint["checkpoint_id"],
                job_id=job_id,
                step=5,
                project_id=project_id,
                name=checkpoint["checkpoint"],
                metrics={"step": 5},
                created_at=now,
            )
        )
        session.add(
            EventRow(
                id=event_id,
                job_id=job_id,
                project_id=project_id,
                created_at=now,
                level="info",
                message=event,
                type="message",
            )
        )
        session.add(_stored_response(project_id, model, response, event, now))
        session.add(_stored_completion(project_id, model, completion_id, event, now))
        add_usage(
            session,
            project_id=project_id,
            model=model,
            base_model=BASE_MODEL,
            requests=3,
            prompt_tokens=30,
            completion_tokens=9,
            trained_tokens=60,
        )
    owner.secrets.add(event)
    return {**checkpoint, "event": event_id, **response}


def _stored_response(
    project_id: str, model: str, ids: dict[str, str], text: str, now: int
) -> ResponseRow:
    """A stored response of ``model`` whose input and metadata say ``text``."""
    request = parse_request({"model": model, "input": text, "metadata": {"said": text}})
    request.items[0]["id"] = ids["response_item"]
    answer = response_object(
        request, response_id=ids["response"], created_at=now, status="completed",
        output=[message_item(text)], completed_at=now,
    )  # fmt: skip
    return ResponseRow(
        id=ids["response"],
        project_id=project_id,
        created_at=now,
        expires_at=None,
        model=model,
        input_items=request.items,
        response=answer,
    )


def _stored_completion(
    project_id: str, model: str, completion_id: str, text: str, now: int
) -> CompletionRow:
    """A chat completion of ``model`` stored with ``store: true``, saying ``text`` everywhere."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    answer = {
        "id": completion_id,
        "created": now,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    metadata = {"said": text}
    return CompletionRow(
        id=completion_id,
        project_id=project_id,
        created_at=now,
        expires_at=None,
        model=model,
        metadata_=metadata,
        messages=body["messages"],
        completion=stored_object(body, answer, metadata, "req_isolation"),
    )


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_nothing_of(owner: Project, response: httpx.Response, *, sent: str = "") -> None:
    """No secret of ``owner`` in the response (headers included), except what the caller sent."""
    text = response.text + json.dumps(dict(response.headers))
    if sent:
        text = text.replace(sent, "<sent>")
    leaked = sorted(s for s in owner.secrets if s in text)
    where = f"{response.request.method} {response.request.url}"
    assert not leaked, f"{where} shows another project's {leaked}: {response.text[:500]}"


def assert_not_found(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code == 404, f"{where}: {response.status_code} {response.text[:500]}"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error", error


def test_the_matrix_covers_every_operation() -> None:
    """A new endpoint must say here which objects it names and what it refers to."""
    for method, path, operation in OBJECT_OPERATIONS:
        for parameter in PATH_PARAMETER.findall(path):
            assert parameter in OBJECTS_BY_PATH_PARAMETER, (
                f"{method} {path}: add '{parameter}' to OBJECTS_BY_PATH_PARAMETER"
            )
        if operation.get("requestBody", {}).get("required"):
            assert label(method, path) in BODIES, f"{method} {path}: add its body to BODIES"
    for method, path, operation in operations():
        if "after" in query_parameters(operation) and not path.startswith(ADMIN_PATH):
            assert path in AFTER_KIND, f"{method} {path}: add its cursor's kind to AFTER_KIND"
    for method, path, _ in COLLECTION_OPERATIONS:
        if method != "GET":
            name = label(method, path)
            assert name in REFERENCES or name in NO_REFERENCES, (
                f"{name}: list the objects its body refers to in REFERENCES (or NO_REFERENCES)"
            )


def test_another_projects_objects_are_not_found_on_every_path(
    projects: tuple[Project, Project],
) -> None:
    alice, bob = projects
    for method, path, _ in OBJECT_OPERATIONS:
        body = BODIES.get(label(method, path), lambda a: {})(alice)
        for names in _objects_named_by(path, alice):
            response = bob.call(method, path.format(**names), **body)
            assert_not_found(response)
            for sent in names.values():
                assert_nothing_of(alice, response, sent=sent)

    _assert_untouched(alice)


def _objects_named_by(path: str, owner: Project) -> Iterator[dict[str, str]]:
    parameters = PATH_PARAMETER.findall(path)
    choices = [OBJECTS_BY_PATH_PARAMETER[p] for p in parameters]
    for kinds in itertools.product(*choices):
        yield {p: owner.ids[k] for p, k in zip(parameters, kinds, strict=True)}


def _assert_untouched(alice: Project) -> None:
    """B's deletes, cancels, pauses and parts changed nothing of A's."""
    ids = alice.ids
    assert _ok(alice.call("GET", f"/v1/files/{ids['file']}"))["id"] == ids["file"]
    assert _ok(alice.call("GET", f"/v1/responses/{ids['response']}"))["id"] == ids["response"]
    completion = _ok(alice.call("GET", f"/v1/chat/completions/{ids['chat_completion']}"))
    assert completion["metadata"] == {"said": completion["choices"][0]["message"]["content"]}
    job = _ok(alice.call("GET", f"/v1/fine_tuning/jobs/{ids['job']}"))
    assert job["status"] == "validating_files"
    done = _ok(alice.call("GET", f"/v1/fine_tuning/jobs/{ids['succeeded_job']}"))
    assert (done["status"], done["fine_tuned_model"]) == ("succeeded", ids["model"])
    models = [m["id"] for m in _ok(alice.call("GET", "/v1/models"))["data"]]
    assert ids["model"] in models and ids["checkpoint"] in models
    completed = _ok(
        alice.call(
            "POST", f"/v1/uploads/{ids['upload']}/complete", json={"part_ids": [ids["part"]]}
        )
    )
    assert completed["status"] == "completed" and completed["file"]["bytes"] == 3
    batch = _ok(alice.call("GET", f"/v1/batches/{ids['batch']}"))
    assert batch["status"] in ("validating", "failed") and batch["cancelling_at"] is None


def test_nothing_of_another_project_in_any_list(projects: tuple[Project, Project]) -> None:
    alice, bob = projects
    for method, path, operation in operations():
        if method != "GET" or path.startswith(ADMIN_PATH):
            continue
        names = _own_objects(path, bob)
        response = bob.call(method, path.format(**names))
        assert response.status_code == 200, f"{method} {path}: {response.text[:500]}"
        assert_nothing_of(alice, response)
        if "after" in query_parameters(operation):
            cursor = alice.ids[AFTER_KIND[path]]
            paged = bob.call(method, path.format(**names), params={"after": cursor})
            assert_not_found(paged)
            assert_nothing_of(alice, paged, sent=cursor)


def _own_objects(path: str, owner: Project) -> dict[str, str]:
    """The caller's own object for each path parameter (a base model for ``{model}``)."""
    own = {
        "file_id": "file",
        "upload_id": "upload",
        "fine_tuning_job_id": "succeeded_job",
        "response_id": "response",
        "completion_id": "chat_completion",
        "batch_id": "batch",
    }
    names = {p: owner.ids[own[p]] for p in PATH_PARAMETER.findall(path) if p in own}
    if "{model}" in path:
        names["model"] = BASE_MODEL
    return names


def test_project_keys_are_refused_on_every_admin_route(projects: tuple[Project, Project]) -> None:
    """Bob's project key on the checkpoint-permission routes, naming Alice's model: OpenAI's
    401 for insufficient permissions, never a hint of whether the model exists."""
    alice, bob = projects
    assert ADMIN_OPERATIONS, "the admin routes moved: update ADMIN_PATH"
    for method, path, _ in ADMIN_OPERATIONS:
        for model in (alice.ids["model"], alice.ids["checkpoint"], UNKNOWN["model"]):
            names = {"fine_tuned_model_checkpoint": model, "permission_id": "cp_" + "Z" * 24}
            body = {"json": {"project_ids": [bob.issued.project_id]}} if method == "POST" else {}
            response = bob.call(method, path.format(**names), **body)
            assert response.status_code == 401, f"{method} {path}: {response.text[:500]}"
            assert "insufficient permissions" in response.json()["error"]["message"]
            assert_nothing_of(alice, response, sent=model)


def test_references_to_another_projects_objects_are_unknown(
    projects: tuple[Project, Project],
) -> None:
    """Naming A's file, model or part gets the answer a name that does not exist gets."""
    alice, bob = projects
    for name, references in REFERENCES.items():
        method, path = name.split(" ", 1)
        for body_field, kind in references:
            theirs = bob.call(method, path, json=_body(name, bob, body_field, alice.ids[kind]))
            unknown = bob.call(method, path, json=_body(name, bob, body_field, UNKNOWN[kind]))
            assert theirs.status_code in (400, 404), f"{name} {body_field}: {theirs.text}"
            assert_same_answer(theirs, unknown, alice.ids[kind], UNKNOWN[kind])
            assert_nothing_of(alice, theirs, sent=alice.ids[kind])

    # B's own upload, completed with A's part.
    complete = f"/v1/uploads/{bob.ids['upload']}/complete"
    theirs = bob.call("POST", complete, json={"part_ids": [alice.ids["part"]]})
    unknown = bob.call("POST", complete, json={"part_ids": [UNKNOWN["part"]]})
    assert theirs.status_code == 400, theirs.text
    assert_same_answer(theirs, unknown, alice.ids["part"], UNKNOWN["part"])
    assert_nothing_of(alice, theirs, sent=alice.ids["part"])


def _body(name: str, caller: Project, body_field: str, value: str) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "POST /v1/fine_tuning/jobs": {"model": BASE_MODEL, "training_file": caller.ids["file"]},
        "POST /v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
        "POST /v1/completions": {"prompt": "hi"},
        "POST /v1/openft/evals": {"model": caller.ids["model"], "file": caller.ids["file"]},
        "POST /v1/responses": {"model": BASE_MODEL, "input": "hi"},
        "POST /v1/openft/distillations": {},
        "POST /v1/responses/input_tokens": {"model": BASE_MODEL, "input": "hi"},
        "POST /v1/batches": {"endpoint": "/v1/chat/completions", "completion_window": "24h"},
    }
    return {**bodies[name], body_field: value}


def assert_same_answer(theirs: httpx.Response, unknown: httpx.Response, a: str, b: str) -> None:
    assert theirs.status_code == unknown.status_code, (theirs.text, unknown.text)
    assert theirs.text.replace(a, "<id>") == unknown.text.replace(b, "<id>")


def test_a_grader_judged_by_another_projects_model_is_judged_by_no_model(
    projects: tuple[Project, Project],
) -> None:
    """A score_model grader naming A's fine-tuned model, run by B, fails to reach a judge in
    the words a model that does not exist gets."""
    alice, bob = projects

    def run(model: str) -> httpx.Response:
        grader = {
            "type": "score_model",
            "name": "judge",
            "model": model,
            "input": [{"role": "user", "content": "Score: {{ sample.output_text }}"}],
        }
        return bob.call(
            "POST",
            "/v1/fine_tuning/alpha/graders/run",
            json={"grader": grader, "model_sample": "x"},
        )

    for kind in ("model", "checkpoint"):
        theirs, unknown = run(alice.ids[kind]), run(UNKNOWN[kind])
        assert theirs.status_code == unknown.status_code == 200, theirs.text
        found, expected = theirs.json(), unknown.json()
        assert found["reward"] == expected["reward"] == 0.0
        assert found["metadata"]["errors"]["model_grader_server_error"] is True
        for body in (found, expected):
            body["metadata"].pop("execution_time")
        assert json.dumps(found).replace(alice.ids[kind], "<id>") == json.dumps(expected).replace(
            UNKNOWN[kind], "<id>"
        )
        assert_nothing_of(alice, theirs, sent=alice.ids[kind])


def test_another_projects_header_and_usage_show_nothing(
    projects: tuple[Project, Project], server: ServerProcess
) -> None:
    alice, bob = projects
    for project_header in (alice.issued.project_id, alice.issued.project_slug):
        response = bob.call("GET", "/v1/files", headers={"OpenAI-Project": project_header})
        assert response.status_code == 401 and response.json()["error"]["code"] == (
            "mismatched_project"
        )
        assert_nothing_of(alice, response, sent=project_header)

    for output in ((), ("--csv",)):
        report = _usage_report(server, "--project", bob.issued.project_slug, *output)
        assert bob.ids["model"] in report  # B's own usage is there
        leaked = sorted(s for s in alice.secrets if s in report)
        assert not leaked, f"usage report for B shows {leaked}:\n{report}"


def _usage_report(server: ServerProcess, *args: str) -> str:
    result = subprocess.run(
        [*openft_command(), "usage", "report", *args],
        cwd=server.workdir,
        env={**server.env, "COLUMNS": "1000"},  # the table must not cut names short
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
