from __future__ import annotations

from pathlib import Path

from service.openapi import render

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_openapi_matches_the_app() -> None:
    checked_in = (REPO / "openapi" / "openapi.json").read_text()

    assert render() == checked_in, "openapi/openapi.json is stale: run `make openapi`"
