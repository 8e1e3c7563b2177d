"""Wire shapes of ``POST /v1/openft/evals``: the request and the before/after report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EXAMPLES = 200
MAX_EXAMPLES = 500  # the call is synchronous: this bounds how long it can take
MetricName = Literal["exact_match", "token_f1", "rouge_l", "grader"]


class CreateEvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        description="One of the project's fine-tuned models or checkpoints (`ft:...`); "
        "its base model answers the same prompts as the baseline.",
    )
    file: str = Field(
        min_length=1,
        description="A file of the project in the chat format: in each example the last "
        "assistant message is the reference answer, the messages before it the prompt.",
    )
    limit: int = Field(
        default=DEFAULT_EXAMPLES,
        ge=1,
        le=MAX_EXAMPLES,
        description="Evaluate the file's first `limit` examples.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Tokens each answer may have; by default the reference's UTF-8 bytes "
        "plus 16 (no tokenizer makes more tokens than bytes), at most 1024 (256 for prompts "
        "without a reference).",
    )
    grader: dict[str, Any] | None = Field(
        default=None,
        description="One of OpenAI's graders (as an RFT job takes): both models' answers are "
        "also scored by it, with each example's other keys as `item`. With a grader, the file "
        "may hold reinforcement prompts (ending in a user turn, no reference answer).",
    )


class Answer(BaseModel):
    """One model's answer to one example and its scores (all None when the request failed)."""

    text: str | None
    error: str | None = None
    exact_match: float | None
    token_f1: float | None
    rouge_l: float | None
    grader: float | None = Field(default=None, description="The request's grader's reward.")


class EvalRow(BaseModel):
    example: int = Field(description="1-based number of the example in the file.")
    prompt: str = Field(description="The text of the prompt's last message.")
    reference: str | None = Field(description="None for a reinforcement prompt.")
    base: Answer
    fine_tuned: Answer


class MetricSummary(BaseModel):
    """A metric's mean over the scored examples, and per example how the fine-tuned model
    compares with the base (higher, equal or lower score)."""

    metric: MetricName
    base: float
    fine_tuned: float
    delta: float
    wins: int
    ties: int
    losses: int


class EvalReport(BaseModel):
    object: Literal["openft.eval"] = "openft.eval"
    created_at: int
    model: str
    base_model: str
    file: str
    examples: int = Field(description="Examples scored (both models answered).")
    failed: int = Field(description="Examples a model could not answer (e.g. too long).")
    skipped: int = Field(description="Lines that are not a chat ending in an assistant answer.")
    metrics: list[MetricSummary]
    rows: list[EvalRow]
