"""OpenAI wire shapes of the Fine-tuning API (field order as api.openai.com sends it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.db.models import FineTuningJob as JobRow
from service.db.models import FineTuningJobCheckpoint as CheckpointRow
from service.db.models import FineTuningJobEvent as EventRow

JobStatus = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]
TERMINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled")
AUTO_HYPERPARAMETERS: dict[str, Any] = {
    "batch_size": "auto",
    "learning_rate_multiplier": "auto",
    "n_epochs": "auto",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SupervisedMethodIn(_Strict):
    hyperparameters: dict[str, Any] | None = None


class ReinforcementMethodIn(_Strict):
    grader: dict[str, Any] = Field(
        description="One of OpenAI's graders (`string_check`, `text_similarity`, `python`, "
        "`score_model`, `multi`): it scores each sampled answer."
    )
    hyperparameters: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = Field(
        default=None,
        description='`{"type": "json_schema", "json_schema": {...}}`: answers are '
        "sampled as that JSON, and graders see `sample.output_json`.",
    )


class MethodIn(_Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodIn | None = None
    dpo: SupervisedMethodIn | None = None  # the same shape: {"hyperparameters": {...}}
    reinforcement: ReinforcementMethodIn | None = None


class CreateJobRequest(_Strict):
    """``POST /v1/fine_tuning/jobs``; hyperparameter values are checked by the service."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    hyperparameters: dict[str, Any] | None = None
    method: MethodIn | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class ForgettingCheck(BaseModel):
    """The base model's general reference set, measured before and after fine-tuning."""

    reference_examples: int
    measure: Literal["loss", "answers"] = Field(
        default="loss", description="The figure the threshold applies to (the base model's)."
    )
    base_loss: float = Field(description="Mean loss per assistant token under the base model.")
    fine_tuned_loss: float = Field(description="The same under the fine-tuned model.")
    relative_increase: float = Field(description="(fine_tuned_loss - base_loss) / base_loss.")
    known_answers: int | None = Field(
        default=None,
        description=(
            "Reference questions with an answer_contains that the base model answers right, "
            "greedily."
        ),
    )
    kept_answers: int | None = Field(
        default=None, description="Of those, the ones the fine-tuned model still answers right."
    )
    answers_lost: float | None = Field(
        default=None, description="1 - kept_answers / known_answers (0 when none are known)."
    )
    threshold: float = Field(
        description=(
            "The change past which the job warns: of relative_increase ('loss') or of "
            "answers_lost ('answers')."
        )
    )
    warning: bool


class JobFindings(BaseModel):
    """OpenFT's extension of the job object: what it found beyond OpenAI's fields."""

    forgetting: ForgettingCheck | None = None


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: JobStatus
    validation_file: str | None
    training_file: str
    hyperparameters: dict[str, Any] | None
    trained_tokens: int | None
    error: JobError | dict[str, Any]
    user_provided_suffix: str | None
    seed: int
    estimated_finish: int | None
    integrations: list[dict[str, Any]]
    metadata: dict[str, str] | None
    usage_metrics: None = None
    shared_with_openai: bool = False
    eval_id: None = None
    method: dict[str, Any]
    openft: JobFindings | None = Field(
        default=None,
        description="OpenFT's extension (not in OpenAI's API): the forgetting check, once run.",
    )

    @classmethod
    def from_row(cls, row: JobRow) -> FineTuningJob:
        # The deprecated top-level field shows the method's hyperparameters (as OpenAI does).
        supervised = row.method.get(row.method.get("type", "supervised")) or {}
        return cls(
            id=row.id,
            model=row.parent_model or row.model,
            created_at=row.created_at,
            finished_at=row.finished_at,
            fine_tuned_model=row.fine_tuned_model,
            organization_id=row.project_id,
            result_files=row.result_files,
            status=row.status,
            validation_file=row.validation_file,
            training_file=row.training_file,
            hyperparameters=supervised.get("hyperparameters"),
            trained_tokens=row.trained_tokens,
            # api.openai.com sends {} (not null) for jobs that have not failed.
            error=JobError(**row.error) if row.error else {},
            user_provided_suffix=row.suffix,
            seed=row.seed,
            estimated_finish=row.estimated_finish,
            integrations=row.integrations,
            metadata=row.job_metadata,
            method=row.method,
            openft=JobFindings.model_validate(row.openft) if row.openft else None,
        )


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any]
    type: Literal["message", "metrics"]

    @classmethod
    def from_row(cls, row: EventRow) -> FineTuningJobEvent:
        return cls(
            id=row.id,
            created_at=row.created_at,
            level=row.level,
            message=row.message,
            data=row.data or {},
            type=row.type,
        )


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def from_row(cls, row: CheckpointRow) -> FineTuningJobCheckpoint:
        return cls(
            id=row.id,
            created_at=row.created_at,
            fine_tuned_model_checkpoint=row.name,
            fine_tuning_job_id=row.job_id,
            metrics=row.metrics,
            step_number=row.step,
        )


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None
