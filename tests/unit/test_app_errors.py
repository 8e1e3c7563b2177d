"""Unexpected failures reach the client as OpenAI's envelope, without internals."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_an_unhandled_exception_is_a_500_envelope_with_a_request_id(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["param"] is None and error["code"] is None
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    assert (
        response.headers["x-request-id"] in error["message"] or "x-request-id" in error["message"]
    )
