"""Rules of the Fine-tuning jobs API: what a valid job is, listing, cancelling, events."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from sqlalchemy.orm import Session

from service import idempotency, job_records, limits, queue
from service.auth.principal import Principal
from service.db.database import Database
from service.db.models import FineTuningJob as JobRow
from service.db.models import FineTuningJobCheckpoint as CheckpointRow
from service.db.models import FineTuningJobEvent as EventRow
from service.errors import InvalidRequestError, no_such_object
from service.files import repository as files_repository
from service.graders.service import checked_grader
from service.ids import new_job_id
from service.jobs import repository
from service.jobs.hyperparameters import checked_hyperparameters
from service.jobs.integrations import checked_integrations, with_run_ids
from service.jobs.schemas import (
    TERMINAL,
    CreateJobRequest,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
)
from service.pagination import cursor_page, split_page
from service.settings import Settings

SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_METADATA_PAIRS = 16
CREATE_OPERATION = "fine_tuning.jobs.create"


class JobsService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def create(
        self,
        principal: Principal,
        request: CreateJobRequest,
        idempotency_key: str | None = None,
    ) -> FineTuningJob:
        """Check what is cheap to check now; the worker validates the file contents.

        ``model`` is a base model, or one of the project's fine-tuned models or checkpoints to
        continue training (the new adapter starts from its weights). A retry with the same
        ``idempotency_key`` returns the job the first request created.
        """
        return idempotency.create_once(
            self.db,
            principal,
            CREATE_OPERATION,
            idempotency_key,
            lambda: idempotency.fingerprint(request.model_dump(mode="json")),
            self.settings.idempotency_key_hours * 3600,
            create=lambda remember: self._create(principal, request, remember),
            find=lambda session, job_id: FineTuningJob.from_row(
                self._get(session, principal, job_id)
            ),
        )

    def _create(
        self,
        principal: Principal,
        request: CreateJobRequest,
        remember: idempotency.Remember | None,
    ) -> FineTuningJob:
        base, parent = self._base_and_parent(principal, request.model)
        _check_suffix(request.suffix)
        _check_metadata(request.metadata)
        integrations = checked_integrations(request.integrations, self.settings.integrations)
        method = _method(request, self.settings)
        now = int(time.time())
        with self.db.write() as session:
            limits.check_active_jobs(session, principal, self.settings)
            self._check_file(session, principal, request.training_file, "training_file")
            if request.validation_file is not None:
                self._check_file(session, principal, request.validation_file, "validation_file")
            row = _new_job(principal, request, base, parent, method, now, integrations)
            session.add(row)
            session.flush()
            job_records.add_event(session, row, f"Created fine-tuning job: {row.id}")
            job_records.add_event(session, row, _validating_message(row))
            if remember is not None:
                remember(session, row.id)
        return FineTuningJob.from_row(row)

    def _base_and_parent(
        self, principal: Principal, model: str
    ) -> tuple[str, repository.OwnedAdapter | None]:
        """The base model a job on ``model`` trains, and the project's fine-tuned model or
        checkpoint it continues from (None when ``model`` is a base model)."""
        unavailable = InvalidRequestError(
            f"Model {model} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
        base, parent = model, None
        if model.startswith("ft:"):
            with self.db.read() as session:
                parent = repository.usable_adapter(session, principal.project_id, model)
            if parent is None:
                raise unavailable
            base = parent.base_model
        if self.settings.base_model(base) is None:
            raise unavailable
        return base, parent

    def list(
        self, principal: Principal, *, after: str | None, limit: int, metadata: dict[str, str]
    ) -> FineTuningJobList:
        with self.db.read() as session:
            rows = cursor_page(
                session,
                after,
                lambda i: repository.position(principal.project_id, i),
                lambda cursor: repository.page(
                    session, principal.project_id, metadata=metadata, after_seq=cursor, limit=limit
                ),
                "FineTuningJob",
            )
        items, has_more = split_page(rows, limit)
        return FineTuningJobList(data=[FineTuningJob.from_row(r) for r in items], has_more=has_more)

    def retrieve(self, principal: Principal, job_id: str) -> FineTuningJob:
        with self.db.read() as session:
            return FineTuningJob.from_row(self._get(session, principal, job_id))

    def cancel(self, principal: Principal, job_id: str) -> FineTuningJob:
        """Cancelled at once; a worker training the job notices between steps and stops."""
        with self.db.write() as session:
            row = self._get(session, principal, job_id)
            if row.status in TERMINAL:
                raise InvalidRequestError(
                    f"Fine-tuning job {job_id} has already finished with status "
                    f"'{row.status}' and cannot be cancelled.",
                    param="fine_tuning_job_id",
                )
            queue.transition(row, "cancelled")
            row.cancel_requested = True
            row.estimated_finish = None
            job_records.add_event(session, row, "Fine-tuning job cancelled")
        return FineTuningJob.from_row(row)

    def pause(self, principal: Principal, job_id: str) -> FineTuningJob:
        """Paused at once; a worker training the job saves a snapshot and lets it go."""
        with self.db.write() as session:
            row = self._get(session, principal, job_id)
            if row.status not in ("queued", "running", "validating_files"):
                raise InvalidRequestError(
                    f"Fine-tuning job {job_id} is {row.status} and cannot be paused; only "
                    "queued or running jobs can.",
                    param="fine_tuning_job_id",
                )
            queue.transition(row, "paused")
            row.estimated_finish = None
            job_records.add_event(session, row, "Fine-tuning job paused")
        return FineTuningJob.from_row(row)

    def resume(self, principal: Principal, job_id: str) -> FineTuningJob:
        """Back in the queue; a worker continues from the newest snapshot."""
        with self.db.write() as session:
            row = self._get(session, principal, job_id)
            if row.status != "paused":
                raise InvalidRequestError(
                    f"Fine-tuning job {job_id} is {row.status}, not paused, so it cannot be "
                    "resumed.",
                    param="fine_tuning_job_id",
                )
            queue.transition(row, "queued")
            job_records.add_event(session, row, "Fine-tuning job resumed")
        return FineTuningJob.from_row(row)

    def checkpoints(
        self, principal: Principal, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningJobCheckpointList:
        with self.db.read() as session:
            self._get(session, principal, job_id)
            rows = _records_page(
                session, CheckpointRow, job_id, after, limit, "FineTuningJobCheckpoint"
            )
        items, has_more = split_page(rows, limit)
        data = [FineTuningJobCheckpoint.from_row(r) for r in items]
        return FineTuningJobCheckpointList(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    def events(
        self, principal: Principal, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningJobEventList:
        with self.db.read() as session:
            self._get(session, principal, job_id)
            rows = _records_page(session, EventRow, job_id, after, limit, "FineTuningJobEvent")
        items, has_more = split_page(rows, limit)
        return FineTuningJobEventList(
            data=[FineTuningJobEvent.from_row(r) for r in items], has_more=has_more
        )

    @staticmethod
    def _get(session: Session, principal: Principal, job_id: str) -> JobRow:
        row = repository.get(session, principal.project_id, job_id)
        if row is None:
            raise no_such_object("FineTuningJob", job_id, param="fine_tuning_job_id")
        return row

    @staticmethod
    def _check_file(session: Session, principal: Principal, file_id: str, param: str) -> None:
        row = files_repository.get(session, principal.project_id, file_id, int(time.time()))
        if row is None:
            raise InvalidRequestError(f"invalid {param}: {file_id}", param=param)
        if row.purpose != "fine-tune":
            raise InvalidRequestError(
                f"invalid {param}: {file_id} has purpose '{row.purpose}'; files for fine-tuning "
                "must be uploaded with purpose 'fine-tune'.",
                param=param,
            )


def _new_job(
    principal: Principal,
    request: CreateJobRequest,
    base: str,
    parent: repository.OwnedAdapter | None,
    method: dict[str, Any],
    now: int,
    integrations: list[dict[str, Any]],
) -> JobRow:
    job_id = new_job_id()
    return JobRow(
        id=job_id,
        project_id=principal.project_id,
        model=base,
        parent_model=request.model if parent is not None else None,
        parent_job_id=parent.job_id if parent is not None else None,
        parent_variant=parent.variant if parent is not None else None,
        training_file=request.training_file,
        validation_file=request.validation_file,
        suffix=request.suffix,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
        method=method,
        job_metadata=request.metadata,
        integrations=with_run_ids(integrations, job_id),
        status="validating_files",
        result_files=[],
        created_at=now,
        attempt=0,
        cancel_requested=False,
    )


def _validating_message(row: JobRow) -> str:
    if row.validation_file is None:
        return f"Validating training file: {row.training_file}"
    return (
        f"Validating training file: {row.training_file} and validation file: {row.validation_file}"
    )


def _method(request: CreateJobRequest, settings: Settings) -> dict[str, Any]:
    """The normalised ``method`` object, with every hyperparameter present ("auto" if unset)."""
    legacy = request.hyperparameters
    if request.method is None:
        values = checked_hyperparameters(legacy or {}, "hyperparameters")
        return {"type": "supervised", "supervised": {"hyperparameters": values}}
    kind = request.method.type
    if kind == "reinforcement":
        return _reinforcement_method(request, settings)
    given = request.method.supervised if kind == "supervised" else request.method.dpo
    nested = given.hyperparameters if given else None
    if nested is not None and legacy is not None:
        raise InvalidRequestError(
            "Specify hyperparameters either in 'hyperparameters' or in "
            f"'method.{kind}.hyperparameters', not both.",
            param="hyperparameters",
        )
    if nested is not None:
        values = checked_hyperparameters(nested, f"method.{kind}.hyperparameters", kind)
    else:
        values = checked_hyperparameters(legacy or {}, "hyperparameters", kind)
    return {"type": kind, kind: {"hyperparameters": values}}


def _reinforcement_method(request: CreateJobRequest, settings: Settings) -> dict[str, Any]:
    """An RFT job: a grader this server can run, a validation file (OpenAI requires one: its
    reward is what the job reports), and RFT's hyperparameters."""
    assert request.method is not None
    given = request.method.reinforcement
    if given is None:
        raise InvalidRequestError(
            "Missing required parameter: 'method.reinforcement'.",
            param="method.reinforcement",
            code="missing_required_parameter",
        )
    if request.hyperparameters is not None:
        raise InvalidRequestError(
            "Reinforcement fine-tuning takes its hyperparameters in "
            "'method.reinforcement.hyperparameters'.",
            param="hyperparameters",
        )
    if request.validation_file is None:
        raise InvalidRequestError(
            "Reinforcement fine-tuning needs a validation_file: the job reports the grader's "
            "mean reward on it.",
            param="validation_file",
            code="missing_required_parameter",
        )
    checked_grader(settings, given.grader, "method.reinforcement.grader")
    _check_response_format(given.response_format)
    values = checked_hyperparameters(
        given.hyperparameters or {}, "method.reinforcement.hyperparameters", "reinforcement"
    )
    return {
        "type": "reinforcement",
        "reinforcement": {
            "grader": given.grader,
            "hyperparameters": values,
            "response_format": given.response_format,
        },
    }


def _check_response_format(response_format: dict[str, Any] | None) -> None:
    if response_format is None:
        return
    param = "method.reinforcement.response_format"
    schema = response_format.get("json_schema")
    if response_format.get("type") != "json_schema" or not isinstance(schema, dict):
        raise InvalidRequestError(
            'response_format must be {"type": "json_schema", "json_schema": {"name": '
            '..., "schema": {...}}}.',
            param=param,
        )
    if not isinstance(schema.get("name"), str) or not isinstance(schema.get("schema"), dict):
        raise InvalidRequestError(
            "response_format.json_schema needs a 'name' and a 'schema' object.",
            param=f"{param}.json_schema",
        )


def _check_suffix(suffix: str | None) -> None:
    if suffix is not None and not SUFFIX.fullmatch(suffix):
        raise InvalidRequestError(
            f"'{suffix}' does not match '^[A-Za-z0-9_-]{{1,64}}$' - 'suffix'", param="suffix"
        )


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequestError(
                f"Invalid 'metadata': key '{key[:64]}' must be at most 64 characters and its "
                "value at most 512 characters.",
                param="metadata",
            )


def _records_page(
    session: Session,
    kind: type[repository.JobRecord],
    job_id: str,
    after: str | None,
    limit: int,
    name: str,
) -> list[repository.JobRecord]:
    """A page of the job's checkpoints or events after the ``after`` record."""
    return cursor_page(
        session,
        after,
        lambda i: repository.record_position(kind, job_id, i),
        lambda cursor: repository.records_page(
            session, kind, job_id, after_seq=cursor, limit=limit
        ),
        name,
    )
