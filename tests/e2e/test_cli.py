"""The ``openft`` admin commands, run as real processes in an empty folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from service.auth.service import AccessService
from service.db.database import Database
from service.errors import AuthenticationError
from tests.support.server import openft_command


def openft(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENFT_DATA_DIR": str(workdir / "data")}
    env.pop("OPENFT_DATABASE_URL", None)
    return subprocess.run(
        [*openft_command(), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_keys_create_list_revoke_in_an_empty_folder(tmp_path: Path) -> None:
    created = openft(tmp_path, "keys", "create", "--project", "acme", "--name", "ci")

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-openft-") and "\n" not in key  # alone on stdout, easy to capture
    access = AccessService(Database(f"sqlite:///{tmp_path / 'data' / 'openft.db'}"))
    principal = access.authenticate(f"Bearer {key}", None)
    assert principal.project_slug == "acme"

    listed = openft(tmp_path, "keys", "list", "--project", "acme")
    assert listed.returncode == 0
    assert principal.key_id[:10] in listed.stdout and "acme" in listed.stdout
    assert key not in listed.stdout

    revoked = openft(tmp_path, "keys", "revoke", principal.key_id)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(AuthenticationError):
        access.authenticate(f"Bearer {key}", None)


def test_a_second_key_joins_the_existing_project(tmp_path: Path) -> None:
    first = openft(tmp_path, "keys", "create", "--project", "acme")
    second = openft(tmp_path, "keys", "create", "--project", "acme")

    assert "Created project" in first.stderr
    assert "Created project" not in second.stderr
    assert first.stdout != second.stdout


@pytest.mark.parametrize(
    "args", [("keys", "create", "--project", "Bad Slug!"), ("keys", "revoke", "key_nope")]
)
def test_bad_input_exits_with_a_message(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = openft(tmp_path, *args)

    assert result.returncode == 2
    assert result.stderr.startswith("error: ")


def test_key_and_project_limits_are_set_and_cleared(tmp_path: Path) -> None:
    key = openft(tmp_path, "keys", "create", "--project", "acme").stdout.strip()
    access = AccessService(Database(f"sqlite:///{tmp_path / 'data' / 'openft.db'}"))
    key_id = access.authenticate(f"Bearer {key}", None).key_id

    assert (
        openft(tmp_path, "keys", "limits", key_id, "--rpm", "30", "--tpm", "9000").returncode == 0
    )
    assert (
        openft(
            tmp_path,
            "projects",
            "limits",
            "acme",
            "--max-active-jobs",
            "2",
            "--storage-quota-bytes",
            "1000000",
        ).returncode
        == 0
    )
    limited = access.authenticate(f"Bearer {key}", None)
    assert (limited.requests_per_minute, limited.tokens_per_minute) == (30, 9000)
    assert (limited.max_active_jobs, limited.storage_quota_bytes) == (2, 1_000_000)

    openft(tmp_path, "keys", "limits", key_id, "--rpm", "0")
    openft(tmp_path, "projects", "limits", "acme", "--max-active-jobs", "-1")
    cleared = access.authenticate(f"Bearer {key}", None)
    assert (cleared.requests_per_minute, cleared.tokens_per_minute) == (None, 9000)
    assert (cleared.max_active_jobs, cleared.storage_quota_bytes) == (None, 1_000_000)

    unknown = openft(tmp_path, "projects", "limits", "nope", "--max-active-jobs", "1")
    assert unknown.returncode == 2 and "No such project: nope" in unknown.stderr
