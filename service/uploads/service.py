"""Rules of the Uploads API: create, add parts, complete into a File, cancel, expire.

Each part is its own committed blob (``uploads/<upload>/<part>``). ``complete`` streams the named
parts, in the order given, into one staged blob while counting bytes, hashing MD5 and running the
fine-tune structure check; only when all agree does the blob become a File, and the upload is
marked completed in the same transaction as the file's row. Part blobs go after that.
"""

from __future__ import annotations

import hashlib
import logging
import time

from sqlalchemy.orm import Session

from service import limits
from service.auth.principal import Principal
from service.blobstore import BlobStore, BlobWriter
from service.blobstore.keys import upload_part_key
from service.datasets.validator import DatasetValidator
from service.db.database import Database
from service.db.models import Upload as UploadRow
from service.db.models import UploadPart as PartRow
from service.errors import InvalidRequestError, no_such_object
from service.files.service import (
    FilesService,
    check_purpose,
    file_expiry,
    refuse_unstructured,
)
from service.files.upload import ReceivedUpload, UploadLimits
from service.ids import new_upload_id, new_upload_part_id
from service.settings import MIB, Settings
from service.uploads import repository
from service.uploads.schemas import (
    MAX_UPLOAD_BYTES,
    CompleteUploadRequest,
    CreateUploadRequest,
    Upload,
    UploadPart,
)

log = logging.getLogger(__name__)

UPLOAD_LIFETIME_S = 3600
MAX_PART_BYTES = 64 * MIB
JSONL_TYPES = ("text/jsonl", "application/jsonl", "application/x-ndjson", "application/json")


class UploadsService:
    def __init__(
        self, db: Database, blobs: BlobStore, files: FilesService, settings: Settings
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.files = files
        self.part_limits = UploadLimits(
            MAX_PART_BYTES,
            settings.max_line_bytes,
            file_field="data",
            text_fields=(),
            check_fine_tune=False,
        )
        self._max_line_bytes = settings.max_line_bytes
        self._max_filename = settings.max_filename_chars
        self._settings = settings

    def create(self, principal: Principal, request: CreateUploadRequest) -> Upload:
        _check_purpose_and_type(request.purpose, request.mime_type)
        if request.bytes > MAX_UPLOAD_BYTES:
            raise InvalidRequestError(
                f"{request.bytes} is greater than the maximum of {MAX_UPLOAD_BYTES} - 'bytes' "
                "(an upload holds at most 8 GB).",
                param="bytes",
            )
        if len(request.filename) > self._max_filename:
            raise InvalidRequestError(
                f"'filename' is longer than {self._max_filename} characters.", param="filename"
            )
        now = int(time.time())
        file_expires_after = None
        if request.expires_after is not None:
            fields = {
                "expires_after[anchor]": request.expires_after.anchor,
                "expires_after[seconds]": str(request.expires_after.seconds),
            }
            file_expiry(fields, request.purpose, now)  # the Files API's rules and words
            file_expires_after = request.expires_after.seconds
        row = UploadRow(
            id=new_upload_id(),
            project_id=principal.project_id,
            filename=request.filename,
            purpose=request.purpose,
            bytes=request.bytes,
            mime_type=request.mime_type,
            status="pending",
            created_at=now,
            expires_at=now + UPLOAD_LIFETIME_S,
            file_expires_after=file_expires_after,
        )
        with self.db.write() as session:
            # The declared size must fit the quota now, so that no part is refused half-way.
            limits.check_storage(session, principal, self._settings, request.bytes, param="bytes")
            session.add(row)
        return Upload.from_row(row)

    def add_part(
        self, principal: Principal, upload_id: str, received: ReceivedUpload
    ) -> UploadPart:
        """Commit the part's blob, then its row (if the upload still takes parts)."""
        if received.blob is None:
            raise InvalidRequestError(
                "Missing required parameter: 'data'.",
                param="data",
                code="missing_required_parameter",
            )
        self._open(principal, upload_id)
        part = PartRow(
            id=new_upload_part_id(),
            upload_id=upload_id,
            bytes=received.blob.size,
            created_at=int(time.time()),
        )
        key = upload_part_key(upload_id, part.id)
        received.blob.commit(key)
        try:
            with self.db.write() as session:
                self._pending(session, principal, upload_id, lock=True)
                session.add(part)
                session.flush()
                limits.check_storage(
                    session, principal, self._settings, part.bytes, param="data", already_added=True
                )
        except BaseException:
            self.blobs.delete(key)
            raise
        return UploadPart.from_row(part)

    def complete(
        self, principal: Principal, upload_id: str, request: CompleteUploadRequest
    ) -> Upload:
        upload, parts = self._parts_to_join(principal, upload_id, request.part_ids)
        total = sum(part.bytes for part in parts)
        if total != upload.bytes:
            raise InvalidRequestError(
                f"The parts hold {total} bytes, but the upload was created with bytes="
                f"{upload.bytes}; they must match.",
                param="part_ids",
            )
        blob = self.blobs.stage()
        try:
            digest = self._join(parts, blob, upload.purpose)
            if request.md5 is not None and request.md5.lower() != digest:
                raise InvalidRequestError(
                    f"The md5 of the joined parts is {digest}, not {request.md5}.", param="md5"
                )
            expires_at = (
                upload.created_at + upload.file_expires_after
                if upload.file_expires_after is not None
                else file_expiry({}, upload.purpose, upload.created_at)
            )

            def mark_completed(session: Session, file_id: str) -> None:
                row = self._pending(session, principal, upload_id, lock=True)
                row.status = "completed"
                row.file_id = file_id

            file = self.files.store(
                principal,
                blob,
                purpose=upload.purpose,
                filename=upload.filename,
                expires_at=expires_at,
                also=mark_completed,
            )
        finally:
            blob.abort()  # a no-op once committed
        self._delete_parts(upload_id)
        upload.status, upload.file_id = "completed", file.id
        return Upload.from_row(upload, file)

    def cancel(self, principal: Principal, upload_id: str) -> Upload:
        with self.db.write() as session:
            row = self._pending(session, principal, upload_id, lock=True)
            row.status = "cancelled"
        self._delete_parts(upload_id)
        return Upload.from_row(row)

    def expire_stale(self, batch: int = 200) -> int:
        """Mark pending uploads past their hour ``expired`` and drop their parts."""
        with self.db.write() as session:
            stale = repository.stale(session, int(time.time()), batch)
            for row in stale:
                row.status = "expired"
            ids = [row.id for row in stale]
        for upload_id in ids:
            self._delete_parts(upload_id)
        return len(ids)

    def sweep_orphans(self, grace_s: float) -> int:
        """Remove part blobs without a row, or of uploads that no longer take parts."""
        keys = [k for k in self.blobs.keys("uploads") if self.blobs.age_seconds(k) > grace_s]
        by_upload: dict[str, list[str]] = {}
        for key in keys:
            _, upload_id, part_id = key.split("/", 2)
            by_upload.setdefault(upload_id, []).append(part_id)
        swept = 0
        for upload_id, part_ids in by_upload.items():
            with self.db.read() as session:
                live = repository.live_part_ids(session, upload_id, part_ids)
            for part_id in part_ids:
                if part_id not in live:
                    self.blobs.delete(upload_part_key(upload_id, part_id))
                    swept += 1
        return swept

    def _open(self, principal: Principal, upload_id: str) -> UploadRow:
        # A check only: an upload found expired raises, so there is nothing to write.
        with self.db.read() as session:
            return self._pending(session, principal, upload_id)

    def _pending(
        self, session: Session, principal: Principal, upload_id: str, *, lock: bool = False
    ) -> UploadRow:
        """The upload, if it still takes parts; an expired one is marked so on the way."""
        row = repository.get(session, principal.project_id, upload_id, lock=lock)
        if row is None:
            raise no_such_object("Upload", upload_id, param="upload_id")
        if row.status == "pending" and row.expires_at <= int(time.time()):
            row.status = "expired"
        if row.status != "pending":
            raise InvalidRequestError(
                f"Upload {upload_id} is {row.status}; only a pending upload takes parts or "
                "can be completed or cancelled.",
                param="upload_id",
            )
        return row

    def _parts_to_join(
        self, principal: Principal, upload_id: str, part_ids: list[str]
    ) -> tuple[UploadRow, list[PartRow]]:
        if not part_ids:
            raise InvalidRequestError("'part_ids' must name at least one part.", param="part_ids")
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequestError("'part_ids' names a part twice.", param="part_ids")
        with self.db.read() as session:
            upload = self._pending(session, principal, upload_id)
            found = repository.parts(session, upload_id, part_ids)
        missing = [part_id for part_id in part_ids if part_id not in found]
        if missing:
            raise InvalidRequestError(
                f"Upload {upload_id} has no part {missing[0]}.", param="part_ids"
            )
        return upload, [found[part_id] for part_id in part_ids]

    def _join(self, parts: list[PartRow], blob: BlobWriter, purpose: str) -> str:
        """Stream the parts into ``blob``; returns their MD5 (hex). Checks fine-tune JSONL."""
        md5 = hashlib.md5(usedforsecurity=False)
        check = (
            DatasetValidator(max_line_bytes=self._max_line_bytes, structure_only=True)
            if purpose == "fine-tune"
            else None
        )
        for part in parts:
            for chunk in self.blobs.read(upload_part_key(part.upload_id, part.id)):
                blob.write(chunk)
                md5.update(chunk)
                if check is not None:
                    check.feed(chunk)
        if check is not None:
            refuse_unstructured(check.finish())
        return md5.hexdigest()

    def _delete_parts(self, upload_id: str) -> None:
        with self.db.read() as session:
            part_ids = repository.all_part_ids(session, upload_id)
        for part_id in part_ids:
            self.blobs.delete(upload_part_key(upload_id, part_id))


def _check_purpose_and_type(purpose: str, mime_type: str) -> None:
    check_purpose(purpose)
    if purpose in ("fine-tune", "batch") and mime_type.split(";")[0].strip() not in JSONL_TYPES:
        raise InvalidRequestError(
            f"The mime_type {mime_type!r} is not supported for purpose '{purpose}': use "
            "'text/jsonl'.",
            param="mime_type",
        )
