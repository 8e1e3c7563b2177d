from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings


def test_defaults_live_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENFT_DATA_DIR", "OPENFT_DATABASE_URL", "OPENFT_BLOB_DIR"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings()

    assert settings.data_dir == tmp_path / "data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'openft.db'}"
    assert settings.blob_root == tmp_path / "data" / "blobs"
    assert settings.max_file_bytes == 512 * 1024 * 1024


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OPENFT_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("OPENFT_MAX_FILE_BYTES", "1024")

    settings = Settings()

    assert settings.data_dir == tmp_path / "state"
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.is_sqlite is False
    assert settings.max_file_bytes == 1024
