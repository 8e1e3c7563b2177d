"""The grader definitions OpenAI accepts, parsed and checked before anything is graded.

``parse_grader`` turns a grader's JSON into one of the classes below or raises ``GraderConfigError``
with the offending field's path (``graders.accuracy.operation``); callers prefix where the grader
sits in their request (``grader``, ``method.reinforcement.grader``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from graders import templates
from graders.formula import Formula, FormulaError
from graders.python_grader import check_source

TEXT_METRICS = (
    "cosine", "fuzzy_match", "bleu", "gleu", "meteor",
    "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
)  # fmt: skip
PYTHON_SOURCE_LIMIT = 256 * 1024


class GraderConfigError(Exception):
    """A grader that cannot be used; ``param`` is the field's path inside the grader."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # The eval variants' field; OpenAI's guides show it in fine-tuning graders too. Ignored here.
    pass_threshold: float | None = Field(default=None, exclude_if=lambda v: v is None)


class StringCheckGrader(_Grader):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Grader):
    type: Literal["text_similarity"] = "text_similarity"
    input: str
    reference: str
    evaluation_metric: Literal[
        "cosine", "fuzzy_match", "bleu", "gleu", "meteor",
        "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
    ]  # fmt: skip


class PythonGrader(_Grader):
    type: Literal["python"]
    source: str = Field(max_length=PYTHON_SOURCE_LIMIT)
    image_tag: str | None = Field(default=None, exclude_if=lambda v: v is None)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Part):
    type: Literal["input_text", "output_text"]
    text: str


class ImagePart(_Part):
    type: Literal["input_image"]
    image_url: str
    detail: str | None = None


class AudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


ContentPart = Annotated[TextPart | ImagePart | AudioPart, Field(discriminator="type")]


class GraderMessage(_Part):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | ContentPart | list[ContentPart]
    type: Literal["message"] | None = Field(default=None, exclude_if=lambda v: v is None)

    def parts(self) -> Iterator[TextPart | ImagePart | AudioPart]:
        if isinstance(self.content, str):
            yield TextPart(type="input_text", text=self.content)
        elif isinstance(self.content, list):
            yield from self.content
        else:
            yield self.content


class SamplingParams(_Part):
    seed: int | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_completions_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class ScoreModelGrader(_Grader):
    type: Literal["score_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2)
    sampling_params: SamplingParams | None = None

    @field_validator("range")
    @classmethod
    def _range_is_increasing(cls, bounds: list[float] | None) -> list[float] | None:
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError("range must be [low, high] with low < high")
        return bounds

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.range[0], self.range[1]) if self.range else (0.0, 1.0)


class LabelModelGrader(_Grader):
    type: Literal["label_model"]
    model: str
    input: list[GraderMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @field_validator("passing_labels")
    @classmethod
    def _passing_labels_are_labels(cls, passing: list[str], info: ValidationInfo) -> list[str]:
        labels = info.data.get("labels", [])
        unknown = [label for label in passing if label not in labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels {labels}")
        return passing


SubGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]
_SUB_GRADER: TypeAdapter[Any] = TypeAdapter(SubGrader)


class MultiGrader(_Grader):
    """Sub-graders by key (OpenAI's guides send a map; a list or one grader is keyed by name)."""

    type: Literal["multi"] = "multi"
    graders: dict[str, SubGrader]
    calculate_output: str

    def formula(self) -> Formula:
        return Formula.parse(self.calculate_output, self.graders)


Grader = StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | MultiGrader
ModelGrader = ScoreModelGrader | LabelModelGrader
_TOP_LEVEL: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader,
        Field(discriminator="type"),
    ]
)
TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")


def parse_grader(data: Any) -> Grader:
    """A top-level grader (``graders.run``, ``graders.validate``, an RFT job's grader)."""
    if not isinstance(data, dict):
        raise GraderConfigError("A grader must be an object with a 'type'.")
    kind = data.get("type")
    if kind == "label_model":
        raise GraderConfigError(
            "A label_model grader is accepted only inside a multi grader (as OpenAI does).", "type"
        )
    if kind == "multi":
        return _parse_multi(data)
    if kind not in TYPES:
        raise GraderConfigError(
            f"Invalid grader type {kind!r}: use one of {', '.join(TYPES)}.", "type"
        )
    grader: Grader = _validated(_TOP_LEVEL, data, "")
    _check_templates(grader, "")
    return grader


def _check_source(grader: Any, prefix: str) -> None:
    """A python grader's source defines ``grade(sample, item)`` (read, never run, here)."""
    if isinstance(grader, PythonGrader):
        problem = check_source(grader.source)
        if problem is not None:
            raise GraderConfigError(problem, prefix + "source")


def _parse_multi(data: dict[str, Any]) -> MultiGrader:
    graders = data.get("graders")
    if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
        graders = [graders]  # one grader object, as the schema types the field
    if isinstance(graders, list):
        keyed: dict[str, Any] = {}
        for index, sub in enumerate(graders):
            name = sub.get("name") if isinstance(sub, dict) else None
            if not isinstance(name, str) or not name.isidentifier():
                raise GraderConfigError(
                    "In a list of graders each grader's name is its key in calculate_output, so "
                    "it must be a name such as 'accuracy'; or send graders as an object by key.",
                    f"graders[{index}].name",
                )
            keyed[name] = sub
        graders = keyed
    if not isinstance(graders, dict) or not graders:
        raise GraderConfigError("graders must be an object of sub-graders by key.", "graders")
    subs: dict[str, Any] = {}
    for key, sub in graders.items():
        if not key.isidentifier():
            raise GraderConfigError(
                f"{key!r} cannot be named in calculate_output: use letters, digits and '_'.",
                f"graders.{key}",
            )
        if isinstance(sub, dict) and sub.get("type") == "multi":
            raise GraderConfigError("A multi grader cannot hold another.", f"graders.{key}.type")
        subs[key] = _validated(_SUB_GRADER, sub, f"graders.{key}.")
        _check_templates(subs[key], f"graders.{key}.")
    multi: MultiGrader = _validated(TypeAdapter(MultiGrader), {**data, "graders": subs}, "")
    try:
        multi.formula()
    except FormulaError as error:
        raise GraderConfigError(f"Invalid calculate_output: {error}", "calculate_output") from None
    return multi


def _validated(adapter: TypeAdapter[Any], data: Any, prefix: str) -> Any:
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        # A tagged union puts the tag first in the path; the user wrote the field, not the tag.
        location = list(first["loc"])
        if location and isinstance(data, dict) and location[0] == data.get("type"):
            location = location[1:]
        path = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in location)
        param = (prefix + path.lstrip(".")) if path else prefix.rstrip(".") or None
        message = first["msg"].removeprefix("Value error, ")
        raise GraderConfigError(
            f"Invalid grader: {message} ({param or 'grader'}).", param
        ) from None


def _template_fields(grader: Any) -> Iterator[tuple[str, str]]:
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        yield "input", grader.input
        yield "reference", grader.reference
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
        for index, message in enumerate(grader.input):
            for part in message.parts():
                if isinstance(part, TextPart):
                    yield f"input[{index}].content", part.text


def _check_templates(grader: Any, prefix: str) -> None:
    _check_source(grader, prefix)
    for field, text in _template_fields(grader):
        try:
            templates.check(text)
        except templates.TemplateError as error:
            raise GraderConfigError(f"Invalid template: {error}", prefix + field) from None


def walk(grader: Grader) -> Iterator[tuple[str, Any]]:
    """Each grader that scores, with its path: the grader itself, or a multi's sub-graders."""
    if isinstance(grader, MultiGrader):
        for key, sub in grader.graders.items():
            yield f"graders.{key}.", sub
    else:
        yield "", grader


def item_problem(grader: Grader, item: dict[str, Any]) -> str | None:
    """The first reference the grader's templates make to ``item`` that this data row lacks
    (checked for every example before an RFT job trains), or None."""
    for _, sub in walk(grader):
        for _, text in _template_fields(sub):
            for expression in templates.references(text):
                if not expression.startswith("item"):
                    continue
                try:
                    templates.lookup(expression, {"item": item})
                except templates.TemplateError as error:
                    return f"the grader's template {error}"
    return None


def check_servable(
    grader: Grader,
    *,
    model_problem: Callable[[str], str | None],
    embeddings_problem: str | None,
    python_problem: Callable[[], str | None],
) -> None:
    """What this server needs to run ``grader``: a judge model for each model grader, an
    embedding model for ``cosine``, the sandbox for python graders, nothing for the rest."""
    for prefix, sub in walk(grader):
        problem, field = None, ""
        if isinstance(sub, ScoreModelGrader | LabelModelGrader):
            problem, field = model_problem(sub.model), "model"
            if problem is None:
                problem, field = _text_only(sub)
        elif isinstance(sub, TextSimilarityGrader) and sub.evaluation_metric == "cosine":
            problem, field = embeddings_problem, "evaluation_metric"
        elif isinstance(sub, PythonGrader):
            problem, field = python_problem(), "source"
        if problem:
            raise GraderConfigError(problem, prefix + field)


def _text_only(grader: ScoreModelGrader | LabelModelGrader) -> tuple[str | None, str]:
    for index, message in enumerate(grader.input):
        for part in message.parts():
            if not isinstance(part, TextPart):
                return (
                    f"{part.type} content is not supported: OpenFT's judge models read text.",
                    f"input[{index}].content",
                )
    return None, ""
