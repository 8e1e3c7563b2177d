"""Rules of the Files API: purposes, expiry, the fine-tune structure check, blob-then-row."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service import idempotency, limits, queue
from service.auth.principal import Principal
from service.blobstore import BlobStore, BlobWriter
from service.blobstore.keys import file_key
from service.datasets.validator import ValidationReport
from service.db.database import Database
from service.db.models import File
from service.errors import InvalidRequestError, no_such_object
from service.files import repository
from service.files.schemas import UPLOAD_PURPOSES, FileDeleted, FileList, FileObject
from service.files.upload import ReceivedUpload, UploadLimits
from service.ids import new_file_id
from service.pagination import Order, cursor_page, split_page
from service.settings import Settings

log = logging.getLogger(__name__)

EXPIRES_MIN_S = 3600
EXPIRES_MAX_S = 30 * 24 * 3600
BATCH_DEFAULT_EXPIRY_S = 30 * 24 * 3600
ORPHAN_GRACE_S = 3600.0
CREATE_OPERATION = "files.create"


@dataclass(frozen=True)
class FileContent:
    filename: str
    size: int
    chunks: Iterator[bytes]


class FilesService:
    def __init__(self, db: Database, blobs: BlobStore, settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.limits = UploadLimits(settings.max_file_bytes, settings.max_line_bytes)
        self._max_filename = settings.max_filename_chars

    def create(
        self, principal: Principal, upload: ReceivedUpload, idempotency_key: str | None = None
    ) -> FileObject:
        """Check the received form, commit the blob, then insert the row that makes it visible.

        A retry with the same ``idempotency_key`` (and the same purpose, name and bytes) returns
        the file the first request created; its own upload is discarded."""
        purpose = _purpose(upload.fields)
        now = int(time.time())
        expires_at = file_expiry(upload.fields, purpose, now)
        blob = upload.blob
        if blob is None:
            raise InvalidRequestError(
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        filename = upload.filename or "upload"
        if len(filename) > self._max_filename:
            raise InvalidRequestError(
                f"'file' has a name longer than {self._max_filename} characters.", param="file"
            )
        if purpose == "fine-tune" and upload.dataset_check is not None:
            refuse_unstructured(upload.dataset_check.report)
        return idempotency.create_once(
            self.db,
            principal,
            CREATE_OPERATION,
            idempotency_key,
            lambda: idempotency.fingerprint(
                purpose,
                filename,
                upload.fields.get("expires_after[anchor]"),
                upload.fields.get("expires_after[seconds]"),
                upload.content_sha256,
            ),
            self.settings.idempotency_key_hours * 3600,
            create=lambda remember: self.store(
                principal,
                blob,
                purpose=purpose,
                filename=filename,
                expires_at=expires_at,
                also=remember,
            ),
            find=lambda session, file_id: self._found(session, principal, file_id),
        )

    @staticmethod
    def _found(session: Session, principal: Principal, file_id: str) -> FileObject | None:
        row = repository.get(session, principal.project_id, file_id, int(time.time()))
        return None if row is None else FileObject.from_row(row)

    def store(
        self,
        principal: Principal,
        blob: BlobWriter,
        *,
        purpose: str,
        filename: str,
        expires_at: int | None,
        also: idempotency.Remember | None = None,
    ) -> FileObject:
        """Commit a checked, staged blob as a new file: blob first, then the row (and ``also``
        with the new file's id, in the same transaction); if the row cannot be written the blob
        goes again."""
        row = File(
            id=new_file_id(),
            project_id=principal.project_id,
            purpose=purpose,
            filename=filename,
            bytes=blob.size,
            created_at=int(time.time()),
            expires_at=expires_at,
            status="processed",
        )
        blob.commit(file_key(row.id))
        try:
            with self.db.write() as session:
                session.add(row)
                if also is not None:
                    also(session, row.id)
                session.flush()
                limits.check_storage(
                    session, principal, self.settings, row.bytes, param="file", already_added=True
                )
        except BaseException:
            self.blobs.delete(file_key(row.id))
            raise
        return FileObject.from_row(row)

    def list(
        self,
        principal: Principal,
        *,
        purpose: str | None,
        limit: int,
        order: Order,
        after: str | None,
    ) -> FileList:
        now = int(time.time())
        with self.db.read() as session:
            rows = cursor_page(
                session,
                after,
                lambda i: repository.position(principal.project_id, i),
                lambda cursor: repository.page(
                    session,
                    principal.project_id,
                    now=now,
                    purpose=purpose,
                    after_seq=cursor,
                    order=order,
                    limit=limit,
                ),
                "File",
            )
        items, has_more = split_page(rows, limit)
        data = [FileObject.from_row(row) for row in items]
        return FileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    def retrieve(self, principal: Principal, file_id: str) -> FileObject:
        return FileObject.from_row(self._get(principal, file_id))

    def content(self, principal: Principal, file_id: str) -> FileContent:
        row = self._get(principal, file_id)
        return FileContent(row.filename, row.bytes, self.blobs.read(file_key(row.id)))

    def delete(self, principal: Principal, file_id: str) -> FileDeleted:
        """Row first, then blob: a crash in between leaves an orphan blob, never a dangling row."""
        with self.db.write() as session:
            if repository.get(session, principal.project_id, file_id, int(time.time())) is None:
                raise no_such_object("File", file_id)
            repository.remove(session, principal.project_id, file_id)
            failed = queue.fail_jobs_needing(session, [file_id])
        if failed:
            log.info("deleting %s failed the jobs waiting for it: %s", file_id, failed)
        self.blobs.delete(file_key(file_id))
        return FileDeleted(id=file_id, deleted=True)

    def purge_expired(self, batch: int = 500) -> int:
        """Delete expired files, rows then blobs; returns how many went."""
        purged = 0
        while True:
            with self.db.write() as session:
                ids = repository.expired_ids(session, int(time.time()), batch)
                repository.remove_by_ids(session, ids)
                queue.fail_jobs_needing(session, ids)
            for file_id in ids:
                self.blobs.delete(file_key(file_id))
            purged += len(ids)
            if len(ids) < batch:
                return purged

    def sweep_orphans(self, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Remove abandoned staged writes and file blobs whose row never appeared."""
        swept = self.blobs.sweep_staging(grace_s)
        keys = [key for key in self.blobs.keys("files") if self.blobs.age_seconds(key) > grace_s]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            ids = [key.removeprefix("files/") for key in chunk]
            with self.db.read() as session:
                present = repository.existing_ids(session, ids)
            for file_id in ids:
                if file_id not in present:
                    self.blobs.delete(file_key(file_id))
                    swept += 1
        if swept:
            log.info("swept %d orphaned blobs", swept)
        return swept

    def _get(self, principal: Principal, file_id: str) -> File:
        with self.db.read() as session:
            row = repository.get(session, principal.project_id, file_id, int(time.time()))
        if row is None:
            raise no_such_object("File", file_id)
        return row


def refuse_unstructured(report: ValidationReport) -> None:
    """A fine-tune file must be JSONL; its examples are checked when a job uses it."""
    problem = report.first_structural
    if problem is not None:
        raise InvalidRequestError(
            f"Invalid file format for fine-tune: line {problem.line}: {problem.detail}.",
            param="file",
            code="invalid_file_format",
        )


def _purpose(fields: dict[str, str]) -> str:
    purpose = fields.get("purpose")
    if purpose is None:
        raise InvalidRequestError(
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    check_purpose(purpose)
    return purpose


def check_purpose(purpose: str) -> None:
    """A purpose files can be uploaded with (``/v1/files`` and ``/v1/uploads``)."""
    if purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(repr(p) for p in UPLOAD_PURPOSES)
        raise InvalidRequestError(
            f"{purpose!r} is not one of [{allowed}] - 'purpose'", param="purpose"
        )


def file_expiry(fields: dict[str, str], purpose: str, now: int) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return now + BATCH_DEFAULT_EXPIRY_S if purpose == "batch" else None
    if anchor is None or seconds is None:
        missing = "anchor" if anchor is None else "seconds"
        raise InvalidRequestError(
            f"Missing required parameter: 'expires_after.{missing}'.",
            param=f"expires_after.{missing}",
            code="missing_required_parameter",
        )
    if anchor != "created_at":
        raise InvalidRequestError(
            f"{anchor!r} is not one of ['created_at'] - 'expires_after.anchor'",
            param="expires_after.anchor",
        )
    try:
        value = int(seconds)
    except ValueError:
        raise InvalidRequestError(
            f"{seconds!r} is not of type 'integer' - 'expires_after.seconds'",
            param="expires_after.seconds",
        ) from None
    if not EXPIRES_MIN_S <= value <= EXPIRES_MAX_S:
        bound = (
            "less than the minimum of 3600"
            if value < EXPIRES_MIN_S
            else ("greater than the maximum of 2592000")
        )
        raise InvalidRequestError(
            f"{value} is {bound} - 'expires_after.seconds'", param="expires_after.seconds"
        )
    return now + value
