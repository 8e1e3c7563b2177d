"""A private, throwaway PostgreSQL server that a test may stop and start at will.

``initdb`` and ``pg_ctl`` from Debian's ``/usr/lib/postgresql/<version>/bin`` (or ``pg_config
--bindir``) build a cluster in a fresh temporary folder and run it on a free loopback port with
trust authentication. PostgreSQL refuses to run as root: as root the cluster belongs to the
``postgres`` user and every command runs through ``runuser -u postgres``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVICE_USER = "postgres"


def bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl, newest version first; None if PostgreSQL is missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    found = [folder for folder in found if (folder / "initdb").is_file()]
    if found:
        return found[0]
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    folder = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout)
    return folder.resolve() if (folder / "initdb").is_file() else None


def available() -> bool:
    if bin_dir() is None:
        return False
    if os.geteuid() != 0:
        return True
    return shutil.which("runuser") is not None and _user_exists(SERVICE_USER)


@dataclass
class PrivateServer:
    bin_dir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (the only one; tests own the server)."""
        return f"postgresql+psycopg://{SERVICE_USER}@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its SQLAlchemy URL."""
        admin = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c max_connections=100"
        )
        self._pg_ctl(
            "start", "-w", "-t", "60", "-l", str(self.folder / "server.log"), "-o", options
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects every session at once; ``immediate`` is a crash (no shutdown
        checkpoint; recovery replays the WAL at the next start)."""
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _pg_ctl(self, *args: str) -> None:
        command = _as_service_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args])
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr}\n{self.log()[-2000:]}")

    @property
    def data(self) -> Path:
        return self.folder / "data"


@contextmanager
def private_postgres() -> Iterator[PrivateServer]:
    """A new cluster, started; stopped and deleted afterwards."""
    binaries = bin_dir()
    assert binaries is not None, "PostgreSQL's initdb is not installed"
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as
    # postgres when we are root.
    folder = Path(tempfile.mkdtemp(prefix="openft-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    server = PrivateServer(binaries, folder, _free_port())
    try:
        initdb = [str(binaries / "initdb"), "-D", str(server.data), "-U", SERVICE_USER]
        done = subprocess.run(
            _as_service_user([*initdb, "--auth=trust", "--encoding=UTF8", "--no-sync"]),
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # not running
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def _as_service_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in folder.parent.name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
