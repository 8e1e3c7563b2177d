"""End-to-end fixtures: a real ``openft serve`` per database, driven by the openai SDK and curl.

Each test gets its own project (and key), so tests share the server but never its data.
Every JSON body a test receives is validated against OpenAI's published spec.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from service.auth.service import AccessService, IssuedKey
from service.blobstore import BlobStore, open_blob_store
from service.db.database import Database
from tests.support import openai_spec
from tests.support.ci import in_ci
from tests.support.server import ServerProcess, start_server, wait_until_models_ready

TEST_MAX_FILE_BYTES = 2 * 1024 * 1024
METRICS_TOKEN = "operators-only-test-token"


@pytest.fixture(scope="session", params=["sqlite", "postgresql", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """API-only servers: SQLite + local blobs, PostgreSQL + local blobs, SQLite + S3 blobs."""
    env = {"OPENFT_MAX_FILE_BYTES": str(TEST_MAX_FILE_BYTES)}
    if request.param == "postgresql":
        env["OPENFT_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    if request.param == "s3":
        env.update(request.getfixturevalue("s3_server").settings_env("e2e"))
    process = start_server(
        tmp_path_factory.mktemp(f"serve-{request.param}"), env, "--workers", "0", "--no-vllm"
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def training_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``openft serve`` with its training worker, vLLM and the demo model, on SQLite."""
    process = start_server(
        tmp_path_factory.mktemp("serve-training"),
        {
            "OPENFT_LEASE_SECONDS": "15",
            "OPENFT_METRICS_TOKEN": METRICS_TOKEN,
            # Graders that name OpenAI's o4-mini are judged by the demo model (test_graders).
            "OPENFT_GRADER_MODELS": '{"o4-mini": "tiny-chat"}',
            # `wandb` integrations write run files (test_job_integrations); MLflow stays off.
            "WANDB_MODE": "offline",
        },
    )
    try:
        wait_until_models_ready(process)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def server_db(server: ServerProcess) -> Iterator[Database]:
    """The server's own database, for tests that must make time pass or look behind the API."""
    database = Database(server.settings().database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def server_blobs(server: ServerProcess) -> BlobStore:
    """The server's own blob store (local folder or S3), to look behind the API."""
    return open_blob_store(server.settings())


@pytest.fixture(scope="session")
def access(server_db: Database) -> AccessService:
    return AccessService(server_db)


@pytest.fixture
def new_project(access: AccessService) -> Callable[[], IssuedKey]:
    """Make a fresh project with one key."""
    return lambda: access.issue_key(f"t-{secrets.token_hex(6)}")


@pytest.fixture
def project(new_project: Callable[[], IssuedKey]) -> IssuedKey:
    return new_project()


@pytest.fixture
def conformance() -> Iterator[openai_spec.ConformanceRecorder]:
    recorder = openai_spec.ConformanceRecorder()
    yield recorder
    if not openai_spec.spec_available():
        message = (
            f"OpenAI's spec is not at {openai_spec.SPEC_PATH}; response bodies were not validated"
        )
        if in_ci():
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        return
    found = recorder.check()
    assert not found, "responses that do not match OpenAI's spec:\n" + "\n".join(found)


@pytest.fixture
def sdk(conformance: openai_spec.ConformanceRecorder) -> Iterator[Callable[..., openai.OpenAI]]:
    """``sdk(base_url, key)``: an SDK client recording its JSON responses for the spec check."""
    clients: list[openai.OpenAI] = []

    def on_response(response: httpx.Response) -> None:
        response.read()
        if response.headers.get("content-type", "").startswith("application/json"):
            conformance.record(
                response.request.method,
                response.request.url.path,
                response.status_code,
                response.json(),
            )

    def make(base_url: str, key: str, **options: Any) -> openai.OpenAI:
        http_client = httpx.Client(event_hooks={"response": [on_response]})
        client = openai.OpenAI(
            base_url=base_url, api_key=key, max_retries=0, http_client=http_client, **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def make_client(
    server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> Callable[..., openai.OpenAI]:
    """An SDK client for a key on the API-only server."""
    return lambda key, **options: sdk(server.api_url, key, **options)


@pytest.fixture
def client(make_client: Callable[..., openai.OpenAI], project: IssuedKey) -> openai.OpenAI:
    return make_client(project.key)


@dataclass
class CurlResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
def curl(
    server: ServerProcess, conformance: openai_spec.ConformanceRecorder, tmp_path: Path
) -> Callable[..., CurlResult]:
    """Run the real curl against the server: ``curl("GET", "/v1/files", "-H", ...)``."""

    def run(method: str, path: str, *args: str, key: str | None = None) -> CurlResult:
        headers_file, body_file = tmp_path / "curl.headers", tmp_path / "curl.body"
        command = ["curl", "-sS", "-X", method, "-D", str(headers_file), "-o", str(body_file)]
        if key is not None:
            command += ["-H", f"Authorization: Bearer {key}"]
        subprocess.run([*command, *args, server.base_url + path], check=True, timeout=60)
        status, headers = _parse_headers(headers_file.read_text())
        result = CurlResult(status, headers, body_file.read_bytes())
        if headers.get("content-type", "").startswith("application/json"):
            conformance.record(method, urlsplit(path).path, status, result.json())
        return result

    return run


def _parse_headers(raw: str) -> tuple[int, dict[str, str]]:
    # With --fail absent and no redirects there is one block; keep the last in any case.
    block = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()][-1]
    status_line, *lines = block.splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


@pytest.fixture
def trainer_client(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> openai.OpenAI:
    """The SDK on the training server, with the key of its first project (``default``)."""
    key = training_server.bootstrap_key()
    assert key is not None
    return sdk(training_server.api_url, key)
