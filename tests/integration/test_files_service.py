"""The Files service against real databases: ordering, expiry and crash leftovers."""

from __future__ import annotations

import os
import time
from unittest import mock

import pytest

from service.app import AppState
from service.auth.principal import Principal
from service.blobstore.keys import file_key
from service.files.upload import ReceivedUpload


def principal(state: AppState, slug: str) -> Principal:
    issued = state.access.issue_key(slug)
    return Principal(issued.project_id, issued.project_slug, issued.key_id)


def upload(state: AppState, content: bytes = b"x", **fields: str) -> ReceivedUpload:
    blob = state.blobs.stage()
    blob.write(content)
    return ReceivedUpload(fields={"purpose": "user_data", **fields}, filename="f.txt", blob=blob)


def test_files_made_in_the_same_second_keep_their_order(state: AppState) -> None:
    owner = principal(state, "order")
    with mock.patch("service.files.service.time.time", return_value=1_800_000_000.0):
        ids = [state.files.create(owner, upload(state)).id for _ in range(30)]

    pages, after = [], None
    while True:
        page = state.files.list(owner, purpose=None, limit=7, order="asc", after=after)
        pages.append(page)
        if not page.has_more:
            break
        after = page.last_id

    assert [f.id for p in pages for f in p.data] == ids
    assert {f.created_at for p in pages for f in p.data} == {1_800_000_000}
    newest_first = state.files.list(owner, purpose=None, limit=100, order="desc", after=None)
    assert [f.id for f in newest_first.data] == ids[::-1]


def test_expired_files_disappear_and_are_purged(state: AppState) -> None:
    owner = principal(state, "expiry")
    now = time.time()
    with mock.patch("service.files.service.time.time", return_value=now - 7200):
        old = state.files.create(
            owner,
            upload(
                state, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
            ),
        )
    kept = state.files.create(owner, upload(state))

    assert [
        f.id for f in state.files.list(owner, purpose=None, limit=10, order="asc", after=None).data
    ] == [kept.id]
    assert state.files.purge_expired() == 1
    assert not state.blobs.exists(file_key(old.id))
    assert state.blobs.exists(file_key(kept.id))


def test_a_failed_row_insert_leaves_no_blob(state: AppState) -> None:
    owner = principal(state, "crash")
    received = upload(state)

    with (
        mock.patch.object(state.db, "write", side_effect=RuntimeError("database went away")),
        pytest.raises(RuntimeError),
    ):
        state.files.create(owner, received)

    assert list(state.blobs.keys("files")) == []


def test_orphans_from_a_crash_are_swept_after_a_grace_period(state: AppState) -> None:
    owner = principal(state, "orphans")
    kept = state.files.create(owner, upload(state))
    orphan = state.blobs.stage()
    orphan.write(b"committed, but the process died before its row was written")
    orphan.commit("files/file-orphan")
    state.blobs.stage().write(b"a write that never finished")

    assert state.files.sweep_orphans(grace_s=3600) == 0  # too young to judge

    stale = time.time() - 7200
    for path in state.blobs.root.rglob("*"):
        if path.is_file():
            os.utime(path, (stale, stale))

    assert state.files.sweep_orphans(grace_s=3600) == 2
    assert list(state.blobs.keys("files")) == [file_key(kept.id)]
