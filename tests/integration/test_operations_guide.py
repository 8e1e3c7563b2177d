"""The commands of README's Operations section, run for real against PostgreSQL and S3.

Schema upgrade, key rotation, and a backup (pg_dump + `openft blobs copy --to s3://...`) restored
into a new database and data folder (pg_restore + `openft blobs copy --from`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from service.auth.service import AccessService
from service.blobstore import LocalBlobStore
from service.db.database import Database
from service.errors import AuthenticationError
from tests.support import postgres, seaweedfs
from tests.support.ci import require
from tests.support.server import openft_command


def run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    found = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert found.returncode == 0, f"{command}: {found.stdout}{found.stderr}"
    return found


def openft(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, *openft_command(), *args)


def libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def put(store: LocalBlobStore, key: str, data: bytes) -> None:
    writer = store.stage()
    writer.write(data)
    writer.commit(key)


def test_upgrade_rotate_keys_back_up_and_restore(
    tmp_path: Path, s3_server: seaweedfs.S3Server
) -> None:
    require(shutil.which("pg_dump") is not None, "pg_dump and pg_restore (PostgreSQL client)")
    s3 = {k: v for k, v in s3_server.settings_env("unused").items() if k != "OPENFT_BLOB_URL"}
    backup = f"s3://{s3_server.bucket}/backups/{secrets.token_hex(4)}"
    with postgres.fresh_database("ops") as url, postgres.fresh_database("restored") as restored:
        env = {
            **os.environ,
            **s3,
            "OPENFT_DATA_DIR": str(tmp_path / "a"),
            "OPENFT_DATABASE_URL": url,
        }
        openft(env, "db", "upgrade")

        # Key rotation: a new key, then the old one revoked.
        old_key = openft(env, "keys", "create", "--project", "acme", "--name", "old").stdout.strip()
        new_key = openft(env, "keys", "create", "--project", "acme", "--name", "new").stdout.strip()
        listing = openft(env, "keys", "list", "--project", "acme").stdout
        assert "old" in listing and "new" in listing
        database = Database(url)
        access = AccessService(database)
        (old_id,) = [k.key_id for k in access.list_keys("acme") if k.name == "old"]
        openft(env, "keys", "revoke", old_id)
        with pytest.raises(AuthenticationError):
            access.authenticate(f"Bearer {old_key}", None)
        assert access.authenticate(f"Bearer {new_key}", None).project_slug == "acme"
        database.dispose()

        blobs = LocalBlobStore(tmp_path / "a" / "blobs")
        originals = {"files/file-1": b"x" * 70_000, "adapters/ftjob-1/final/a.bin": b"weights"}
        for key, data in originals.items():
            put(blobs, key, data)

        # Backup: the database first, then the blobs (a row's blobs are written before it).
        dump = tmp_path / "openft.dump"
        run(env, "pg_dump", "--format=custom", f"--file={dump}", libpq(url))
        copied = openft(env, "blobs", "copy", "--to", backup).stderr
        assert "Copied 2 blobs" in copied

        # Restore into a new database and data folder.
        restored_env = {
            **env,
            "OPENFT_DATA_DIR": str(tmp_path / "b"),
            "OPENFT_DATABASE_URL": restored,
        }
        run(env, "pg_restore", "--no-owner", f"--dbname={libpq(restored)}", str(dump))
        openft(restored_env, "blobs", "copy", "--from", backup)
        openft(restored_env, "db", "upgrade")
        again = openft(restored_env, "blobs", "copy", "--from", backup).stderr
        assert "Copied 0 blobs" in again  # an interrupted copy can be run again

        restored_blobs = LocalBlobStore(tmp_path / "b" / "blobs")
        for key, data in originals.items():
            assert b"".join(restored_blobs.read(key)) == data
        database = Database(restored)
        access = AccessService(database)
        assert access.authenticate(f"Bearer {new_key}", None).project_slug == "acme"
        with pytest.raises(AuthenticationError):
            access.authenticate(f"Bearer {old_key}", None)
        database.dispose()
