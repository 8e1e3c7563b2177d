"""SQLAlchemy tables. Every tenant-owned row carries ``project_id``; lists page on ``seq``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A monotonic surrogate key: SQLite needs INTEGER for its rowid alias, PostgreSQL gets BIGSERIAL.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Limits that override the deployment's defaults for this project (None: the default).
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    storage_quota_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # Rate limits that override the deployment's defaults for this key (None: the default).
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_project_id_seq", "project_id", "seq"),
        Index("ix_files_expires_at", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(1024))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))


class FineTuningJob(Base):
    """A fine-tuning job; the queue columns (lease, attempt, cancel) are the worker's."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index("ix_fine_tuning_jobs_project_id_seq", "project_id", "seq"),
        Index("ix_fine_tuning_jobs_status_seq", "status", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(64))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)
    integrations: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256))
    result_files: Mapped[list[str]] = mapped_column(JSON)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    model_deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    lost_leases: Mapped[int] = mapped_column(Integer, default=0)
    prompt_profile: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # see service.drift
    # Continued training: the owned ft: model or checkpoint the job starts from (``model`` is
    # then its base model), and where that adapter lives.
    parent_model: Mapped[str | None] = mapped_column(String(300))
    parent_job_id: Mapped[str | None] = mapped_column(String(64))
    parent_variant: Mapped[str | None] = mapped_column(String(32))
    # OpenFT's own findings about the job (the ``openft`` field), e.g. {"forgetting": {...}}.
    openft: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class FineTuningJobEvent(Base):
    """An event; ``step`` is set on metrics events, which are unique per (job, type, step)."""

    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (
        Index("ix_fine_tuning_job_events_job_id_seq", "job_id", "seq"),
        Index("uq_fine_tuning_job_events_job_id_type_step", "job_id", "type", "step", unique=True),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    step: Mapped[int | None] = mapped_column(Integer)


class FineTuningJobCheckpoint(Base):
    """A published checkpoint: an adapter a job saved at an epoch end, servable by its name."""

    __tablename__ = "fine_tuning_job_checkpoints"
    __table_args__ = (
        Index("ix_fine_tuning_job_checkpoints_job_id_seq", "job_id", "seq"),
        Index("uq_fine_tuning_job_checkpoints_job_id_step", "job_id", "step", unique=True),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Upload(Base):
    """A multipart upload: parts arrive separately and ``complete`` joins them into a file."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_project_id_seq", "project_id", "seq"),
        Index("ix_uploads_status_expires_at", "status", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(1024))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    file_expires_after: Mapped[int | None] = mapped_column(BigInteger)  # seconds, for the file
    file_id: Mapped[str | None] = mapped_column(String(64))


class UploadPart(Base):
    __tablename__ = "upload_parts"
    __table_args__ = (
        Index("ix_upload_parts_upload_id_seq", "upload_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class UsageHour(Base):
    """What one project used of one model in one hour: the durable source for chargeback."""

    __tablename__ = "usage_hours"
    __table_args__ = (
        Index("uq_usage_hours_project_id_model_hour", "project_id", "model", "hour", unique=True),
        Index("ix_usage_hours_hour", "hour"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(300))
    base_model: Mapped[str] = mapped_column(String(64))
    hour: Mapped[int] = mapped_column(BigInteger)  # epoch seconds at the start of the hour
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    trained_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    training_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class RateLimitWindow(Base):
    """Requests and tokens one API key used in one second (the rate limits sum a minute of them;
    shared by every API process)."""

    __tablename__ = "rate_limit_windows"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    requests: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a project sent with a create call, and the object it created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index(
            "uq_idempotency_keys_project_id_operation_key",
            "project_id",
            "operation",
            "key",
            unique=True,
        ),
        Index("ix_idempotency_keys_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))  # e.g. "files.create"
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))  # None while the first is running
    created_at: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    """Where a project wants job events delivered, with the secret deliveries are signed with."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))  # whsec_...: needed in clear to sign
    event_types: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    disabled_at: Mapped[int | None] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """One event to one endpoint: an outbox row, written with the job's final status."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)  # wh_...: the webhook-id header
    event_id: Mapped[str] = mapped_column(String(64))  # evt_...: the payload's id
    endpoint_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)


class StoredResponse(Base):
    """A response created with ``store`` on: its object and the input items of its whole chain
    (what ``previous_response_id`` replays and ``input_items`` lists), until ``expires_at``."""

    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_project_id_seq", "project_id", "seq"),
        Index("ix_responses_expires_at", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(256))
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


class StoredChatCompletion(Base):
    """A chat completion created with ``store: true``: the stored object (what list, retrieve and
    update return), the request's messages (what ``messages`` lists) and its ``metadata`` (what
    list filters on), until ``expires_at``."""

    __tablename__ = "chat_completions"
    __table_args__ = (
        Index("ix_chat_completions_project_id_seq", "project_id", "seq"),
        Index("ix_chat_completions_expires_at", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(256))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    completion: Mapped[dict[str, Any]] = mapped_column(JSON)


class Batch(Base):
    """A batch of requests from a ``batch`` file; the lease columns are the batch runner's, and
    each line's outcome is a ``BatchLine`` row (what a resumed run skips)."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_project_id_seq", "project_id", "seq"),
        Index("ix_batches_status_seq", "status", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(64))  # the key that created it
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(300))
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON(none_as_null=True))
    output_expires_after: Mapped[int | None] = mapped_column(BigInteger)  # seconds
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer, default=0)


class BatchLine(Base):
    """One input line's outcome, written once: its output-file line (``ok``) or error-file line."""

    __tablename__ = "batch_lines"
    __table_args__ = (
        Index("uq_batch_lines_batch_id_line", "batch_id", "line", unique=True),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)  # 1-based, in the input file
    ok: Mapped[bool] = mapped_column(Boolean)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)


class AdminKey(Base):
    """An operator's admin key (hash only): it may call the admin routes (checkpoint
    permissions) and nothing that belongs to a project."""

    __tablename__ = "admin_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted: Mapped[str] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class CheckpointPermission(Base):
    """Another project may call (and train from) a fine-tuned model or checkpoint."""

    __tablename__ = "checkpoint_permissions"
    __table_args__ = (
        Index("uq_checkpoint_permissions_checkpoint_project_id", "checkpoint", "project_id",
              unique=True),
        {"sqlite_autoincrement": True},
    )  # fmt: skip

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    checkpoint: Mapped[str] = mapped_column(String(300))  # the model or checkpoint name
    owner_project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
