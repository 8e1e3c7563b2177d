"""Key checks without a query per request, on SQLite and PostgreSQL: an API process remembers the
keys it checked good, and a revocation or limit change made by any other process (the CLI, another
API process) is seen on that process's very next check."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import event

from service.app import AppState
from service.auth.service import AccessService
from service.db.database import Database
from service.errors import AuthenticationError

NOTIFIED_WITHIN_S = 5.0


@pytest.fixture
def api_process(state: AppState) -> Iterator[AccessService]:
    """A second process's view: its own engine and cache over the same database."""
    other = Database(state.db.engine.url.render_as_string(hide_password=False))
    access = AccessService(other, key_cache_seconds=60)
    yield access
    access.close()
    other.dispose()


def queries_of(db: Database) -> list[str]:
    """Every statement ``db`` runs from now on."""
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def checked(access: AccessService, key: str) -> Callable[[], object]:
    """One request's key check as the API does it: remembered, else the database."""

    def check() -> object:
        authorization = f"Bearer {key}"
        return access.remembered(authorization, None) or access.authenticate(authorization, None)

    return check


def remembered_soon(access: AccessService, key: str) -> bool:
    """Whether ``key`` is served from memory within a few seconds (PostgreSQL: once the
    process's listener is connected)."""
    deadline = time.monotonic() + NOTIFIED_WITHIN_S
    while time.monotonic() < deadline:
        checked(access, key)()
        if access.remembered(f"Bearer {key}", None) is not None:
            return True
        time.sleep(0.05)
    return False


def test_a_good_key_is_checked_once_then_remembered(
    state: AppState, api_process: AccessService
) -> None:
    key = state.access.issue_key("acme").key
    assert remembered_soon(api_process, key)
    seen = queries_of(api_process._db)

    for _ in range(20):
        principal = checked(api_process, key)()

    assert seen == []  # no query, not even a BEGIN
    assert getattr(principal, "project_slug", None) == "acme"


def test_a_revocation_by_another_process_refuses_the_next_request(
    state: AppState, api_process: AccessService
) -> None:
    issued = state.access.issue_key("acme")
    assert remembered_soon(api_process, issued.key)

    state.access.revoke_key(issued.key_id)  # the CLI's process, with its own engine

    deadline = time.monotonic() + NOTIFIED_WITHIN_S
    if state.db.dialect == "sqlite":
        deadline = time.monotonic()  # one host: the stamp file is read on every check
    while api_process.remembered(f"Bearer {issued.key}", None) is not None:
        assert time.monotonic() < deadline, "the revoked key is still remembered"
        time.sleep(0.01)
    with pytest.raises(AuthenticationError):
        checked(api_process, issued.key)()


def test_new_limits_are_read_again(state: AppState, api_process: AccessService) -> None:
    issued = state.access.issue_key("acme")
    assert remembered_soon(api_process, issued.key)

    state.access.set_key_limits(issued.key_id, requests_per_minute=7, tokens_per_minute=None)
    state.access.set_project_limits("acme", max_active_jobs=2, storage_quota_bytes=None)

    deadline = time.monotonic() + NOTIFIED_WITHIN_S
    while True:
        principal = checked(api_process, issued.key)()
        if getattr(principal, "max_active_jobs", None) == 2:
            break
        assert time.monotonic() < deadline, f"stale limits: {principal}"
        time.sleep(0.01)
    assert getattr(principal, "requests_per_minute", None) == 7


def test_unknown_keys_are_never_remembered(state: AppState, api_process: AccessService) -> None:
    key = state.access.issue_key("acme").key
    assert remembered_soon(api_process, key)
    wrong = key[:-4] + "xxxx"

    for _ in range(3):
        with pytest.raises(AuthenticationError):
            checked(api_process, wrong)()
        assert api_process.remembered(f"Bearer {wrong}", None) is None


def test_a_wrong_project_header_is_refused_from_memory_too(
    state: AppState, api_process: AccessService
) -> None:
    key = state.access.issue_key("acme").key
    assert remembered_soon(api_process, key)

    with pytest.raises(AuthenticationError, match="OpenAI-Project"):
        api_process.remembered(f"Bearer {key}", "proj_someone_else")


def test_without_a_cache_every_check_asks_the_database(state: AppState) -> None:
    key = state.access.issue_key("acme").key
    uncached = AccessService(state.db)  # the CLI's and tests' default
    seen = queries_of(state.db)

    checked(uncached, key)()
    checked(uncached, key)()

    assert uncached.remembered(f"Bearer {key}", None) is None
    assert sum("api_keys" in statement for statement in seen) == 2
