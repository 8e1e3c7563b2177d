"""What operators rely on: JSON logs with the ids of each request, the `openft api` entry point."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.server import start_server


def json_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_json_logs_carry_the_request_and_project_ids(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"OPENFT_LOG_FORMAT": "json"}, "--workers", "0", "--no-vllm")
    try:
        key = server.bootstrap_key()
        response = httpx.get(
            server.api_url + "/files/file-nope", headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 404
        request_id = response.headers["x-request-id"]

        deadline = time.monotonic() + 10
        while not (
            mine := [
                line
                for line in json_lines(server.stderr_path)
                if line.get("request_id") == request_id
            ]
        ):
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
    finally:
        server.stop()

    (access,) = mine
    assert "GET /v1/files/file-nope" in str(access["message"])
    assert access["logger"] == "uvicorn.access" and access["project"] == "default"
    assert str(access["project_id"]).startswith("proj_")
    lines = server.stderr_path.read_text().splitlines()
    logged = [line for line in lines if not line.startswith(("Created project", "sk-"))]
    assert logged and all(line.startswith("{") for line in logged), logged[:5]


def test_the_api_entry_point_serves_the_api_and_no_training_or_vllm(tmp_path: Path) -> None:
    server = start_server(tmp_path, {}, "--api-workers", "2", entry_point="api")
    try:
        key = server.bootstrap_key()
        models = httpx.get(server.api_url + "/models", headers={"authorization": f"Bearer {key}"})
        ready = httpx.get(server.base_url + "/readyz").json()
        children = subprocess.run(
            ["ps", "-o", "args=", "--ppid", str(server.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    finally:
        server.stop()

    assert models.status_code == 200 and "tiny-chat" in [m["id"] for m in models.json()["data"]]
    # No vLLM child and no worker: this node only routes to OPENFT_VLLM_URLS (none here).
    assert not (tmp_path / "data" / "run" / "vllm-tiny-chat.pid").exists()
    assert children.count("multiprocessing.spawn") == 2, children  # the two API processes
    assert "trainer.worker" not in children and "vllm" not in children
    assert ready["status"] == "ready", ready


def test_the_access_log_can_be_turned_off(tmp_path: Path) -> None:
    settings = {"OPENFT_LOG_FORMAT": "json", "OPENFT_ACCESS_LOG": "false"}
    server = start_server(tmp_path, settings, "--workers", "0", "--no-vllm")
    try:
        key = server.bootstrap_key()
        for _ in range(3):
            response = httpx.get(
                server.api_url + "/files/file-nope", headers={"authorization": f"Bearer {key}"}
            )
            assert response.status_code == 404
        time.sleep(0.5)  # a line would be written before the response is sent; give it time
    finally:
        server.stop()
    loggers = {line.get("logger") for line in json_lines(server.stderr_path)}
    assert loggers and "uvicorn.access" not in loggers, loggers
