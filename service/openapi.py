"""The app's OpenAPI document, as checked in at ``openapi/openapi.json``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from service.app import create_app
from service.settings import Settings

CHECKED_IN = Path("openapi") / "openapi.json"


def render() -> str:
    """The document as stable, indented JSON (the app is built on a throw-away data dir)."""
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(Settings(data_dir=Path(scratch), database_url=f"sqlite:///{scratch}/x.db"))
        document = app.openapi()
        app.state.openft.db.dispose()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
