"""The Batch API's rules for clients: create (the input file checked), retrieve, list, cancel.
Running a batch is ``BatchRunner``'s; the two meet only in the ``batches`` table."""

from __future__ import annotations

from typing import Any

from service.auth.principal import Principal
from service.batches import repository
from service.batches.requests import ENDPOINTS, UNSERVED_ENDPOINTS
from service.batches.schemas import TERMINAL, CreateBatchRequest, batch_object
from service.completions.stored import checked_metadata
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import Batch
from service.errors import InvalidRequestError, NotFoundError, no_such_object
from service.files import repository as files
from service.ids import new_batch_id
from service.pagination import list_envelope, split_page

WINDOW_S = 24 * 3600
MAX_INPUT_BYTES = 200 * 1024 * 1024  # OpenAI's limit on a batch input file


def batch_not_found(batch_id: str) -> NotFoundError:
    return no_such_object("Batch", batch_id, param="batch_id")


class BatchesService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, principal: Principal, request: CreateBatchRequest) -> dict[str, Any]:
        """A batch in ``validating``, for a runner to pick up."""
        _check_endpoint(request.endpoint)
        metadata = checked_metadata(request.metadata) if request.metadata is not None else None
        with self.db.write() as session:
            now = database_now(session)
            source = files.get(session, principal.project_id, request.input_file_id, now)
            if source is None:
                raise no_such_object("File", request.input_file_id, param="input_file_id")
            if source.purpose != "batch":
                raise InvalidRequestError(
                    f"The input file {source.id} has purpose '{source.purpose}'; a batch reads "
                    "a file uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            if source.bytes > MAX_INPUT_BYTES:
                raise InvalidRequestError(
                    f"The input file is {source.bytes} bytes; a batch input file may be at most "
                    f"{MAX_INPUT_BYTES} bytes (200 MB).",
                    param="input_file_id",
                )
            expiry = request.output_expires_after
            row = Batch(
                id=new_batch_id(),
                project_id=principal.project_id,
                key_id=principal.key_id,
                endpoint=request.endpoint,
                input_file_id=source.id,
                completion_window=request.completion_window,
                status="validating",
                metadata_=metadata,
                output_expires_after=expiry.seconds if expiry is not None else None,
                total=0,
                completed=0,
                failed=0,
                input_tokens=0,
                output_tokens=0,
                attempt=0,
                created_at=now,
                expires_at=now + WINDOW_S,
            )
            session.add(row)
            session.flush()
            return batch_object(row)

    def retrieve(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = repository.get(session, principal.project_id, batch_id)
            if row is None:
                raise batch_not_found(batch_id)
            return batch_object(row)

    def list(self, principal: Principal, *, after: str | None, limit: int) -> dict[str, Any]:
        """The project's batches, newest first."""
        with self.db.read() as session:
            rows = repository.page(session, principal.project_id, after=after, limit=limit)
            page, has_more = split_page(rows, limit)
            return list_envelope([batch_object(row) for row in page], has_more)

    def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        """``cancelling`` at once; the runner stops sending lines and ends it ``cancelled`` with
        what had finished (and the lines it never sent in the error file)."""
        with self.db.write() as session:
            row = repository.get(session, principal.project_id, batch_id)
            if row is None:
                raise batch_not_found(batch_id)
            if row.status in TERMINAL:
                raise InvalidRequestError(
                    f"Cannot cancel a batch with status '{row.status}'.", param="batch_id"
                )
            if row.status != "cancelling":
                row.status = "cancelling"
                row.cancelling_at = database_now(session)
            return batch_object(row)


def _check_endpoint(endpoint: str) -> None:
    if endpoint in ENDPOINTS:
        return
    if endpoint in UNSERVED_ENDPOINTS:
        raise InvalidRequestError(
            f"OpenFT does not serve {endpoint}, so it cannot batch it; batches call "
            f"{', '.join(ENDPOINTS)}.",
            param="endpoint",
        )
    raise InvalidRequestError(
        f"Invalid 'endpoint': {endpoint!r}. Supported values are: {', '.join(ENDPOINTS)}.",
        param="endpoint",
    )
