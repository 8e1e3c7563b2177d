"""Uploads housekeeping on SQLite and PostgreSQL: expiry after the hour, orphaned part blobs."""

from __future__ import annotations

from sqlalchemy import select, update

from service.app import AppState
from service.auth.principal import Principal
from service.blobstore.keys import upload_part_key
from service.db.models import Upload as UploadRow
from service.files.upload import ReceivedUpload
from service.uploads.schemas import CreateUploadRequest


def owner(state: AppState) -> Principal:
    issued = state.access.issue_key("uploads")
    return Principal(issued.project_id, issued.project_slug, issued.key_id)


def part(state: AppState, data: bytes) -> ReceivedUpload:
    blob = state.blobs.stage()
    blob.write(data)
    return ReceivedUpload(blob=blob)


def new_upload(state: AppState, who: Principal) -> str:
    request = CreateUploadRequest(
        filename="t.jsonl", purpose="fine-tune", bytes=4, mime_type="text/jsonl"
    )
    return state.uploads.create(who, request).id


def test_uploads_past_their_hour_expire_and_lose_their_parts(state: AppState) -> None:
    who = owner(state)
    old, young = new_upload(state, who), new_upload(state, who)
    old_part = state.uploads.add_part(who, old, part(state, b"{}\n\n"))
    young_part = state.uploads.add_part(who, young, part(state, b"{}\n\n"))
    with state.db.write() as session:
        session.execute(update(UploadRow).where(UploadRow.id == old).values(expires_at=0))

    assert state.uploads.expire_stale() == 1

    with state.db.read() as session:
        statuses = {
            row.id: row.status for row in session.execute(select(UploadRow.id, UploadRow.status))
        }
    assert statuses == {old: "expired", young: "pending"}
    assert not state.blobs.exists(upload_part_key(old, old_part.id))
    assert state.blobs.exists(upload_part_key(young, young_part.id))


def test_part_blobs_without_a_live_part_are_swept(state: AppState) -> None:
    who = owner(state)
    upload_id = new_upload(state, who)
    kept = state.uploads.add_part(who, upload_id, part(state, b"{}\n\n"))
    orphan = state.blobs.stage()
    orphan.write(b"a part whose row was never written")
    orphan.commit(upload_part_key(upload_id, "part_" + "0" * 32))

    assert state.uploads.sweep_orphans(grace_s=3600) == 0  # young: maybe still arriving
    assert state.uploads.sweep_orphans(grace_s=0) == 1

    assert list(state.blobs.keys(f"uploads/{upload_id}")) == [upload_part_key(upload_id, kept.id)]
