"""Wire shapes of ``/v1/fine_tuning/alpha/graders/run`` and ``/validate``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GRADER_DESCRIPTION = (
    "One of OpenAI's graders: `string_check`, `text_similarity`, `python`, `score_model` or "
    "`multi` (whose `graders` may hold `label_model` too)."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateGraderRequest(_Strict):
    grader: dict[str, Any] = Field(description=GRADER_DESCRIPTION)


class ValidateGraderResponse(BaseModel):
    grader: dict[str, Any] = Field(description="The grader, as sent.")


class RunGraderRequest(_Strict):
    grader: dict[str, Any] = Field(description=GRADER_DESCRIPTION)
    model_sample: str = Field(
        description="The model's answer: `sample.output_text`, and `sample.output_json` when it "
        "is valid JSON."
    )
    item: dict[str, Any] | None = Field(
        default=None, description="The data row: the `item` namespace of templates."
    )


class RunGraderMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, bool | str | None]
    execution_time: float = Field(description="Seconds the grading took.")
    scores: dict[str, float] = Field(description="A multi grader's sub-graders' scores by key.")
    token_usage: dict[str, int] | None = Field(
        description="Judge model tokens (model graders); null for the others."
    )
    sampled_model_name: str | None


class RunGraderResponse(BaseModel):
    reward: float
    metadata: RunGraderMetadata
    sub_rewards: dict[str, float]
    model_grader_token_usage_per_model: dict[str, dict[str, int]]
