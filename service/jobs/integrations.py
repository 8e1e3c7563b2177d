"""What a job's ``integrations`` may name: checked against what this deployment can send to,
and stored the way OpenAI echoes them (a W&B run's id is the job's id)."""

from __future__ import annotations

from typing import Any

from service.errors import InvalidRequestError

KNOWN = ("wandb", "openft_mlflow")
MAX_TAGS = 50
MAX_TAG_CHARS = 64
DEFAULT_MLFLOW_EXPERIMENT = "openft"
HOW_TO_ENABLE = {
    "wandb": "its operator sets WANDB_API_KEY (and WANDB_BASE_URL for a self-hosted W&B), "
    "or WANDB_MODE=offline",
    "openft_mlflow": "its operator sets OPENFT_MLFLOW_TRACKING_URI",
}


def checked_integrations(
    given: list[dict[str, Any]] | None, available: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The integrations as the job stores them, or a 400 naming the field that is wrong."""
    return [_checked(item, f"integrations[{i}]", available) for i, item in enumerate(given or [])]


def with_run_ids(integrations: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """As OpenAI does: the W&B run is named by the job's id."""
    return [
        {**item, "wandb": {**item["wandb"], "run_id": job_id}} if item["type"] == "wandb" else item
        for item in integrations
    ]


def _checked(item: Any, param: str, available: tuple[str, ...]) -> dict[str, Any]:
    kind = item.get("type") if isinstance(item, dict) else None
    if kind not in KNOWN:
        raise InvalidRequestError(
            f"{kind!r} is not one of {list(KNOWN)} - '{param}.type'", param=f"{param}.type"
        )
    if kind not in available:
        raise InvalidRequestError(
            f"The {kind} integration is not configured on this server: {HOW_TO_ENABLE[kind]}.",
            param=f"{param}.type",
        )
    spec = item.get(kind)
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            f"Missing required parameter: '{param}.{kind}'.",
            param=f"{param}.{kind}",
            code="missing_required_parameter",
        )
    where = f"{param}.{kind}"
    if kind == "wandb":
        return {"type": kind, kind: _wandb(spec, where)}
    return {"type": kind, kind: _mlflow(spec, where)}


def _wandb(spec: dict[str, Any], where: str) -> dict[str, Any]:
    project = spec.get("project")
    if not isinstance(project, str) or not project.strip():
        raise InvalidRequestError(
            f"Missing required parameter: '{where}.project'.",
            param=f"{where}.project",
            code="missing_required_parameter",
        )
    tags = spec.get("tags") or []
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise InvalidRequestError(
            f"'{where}.tags' must be a list of at most {MAX_TAGS} strings.", param=f"{where}.tags"
        )
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG_CHARS:
            raise InvalidRequestError(
                f"Each W&B tag must be a string of 1 to {MAX_TAG_CHARS} characters.",
                param=f"{where}.tags[{i}]",
            )
    return {
        "project": project,
        "name": _optional_text(spec, "name", where),
        "entity": _optional_text(spec, "entity", where),
        "tags": tags,
    }


def _mlflow(spec: dict[str, Any], where: str) -> dict[str, Any]:
    experiment = _optional_text(spec, "experiment_name", where) or DEFAULT_MLFLOW_EXPERIMENT
    tags = spec.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise InvalidRequestError(
            f"'{where}.tags' must be an object of at most {MAX_TAGS} string values.",
            param=f"{where}.tags",
        )
    for key, value in tags.items():
        if not isinstance(value, str) or not key or len(key) > 250 or len(value) > 5000:
            raise InvalidRequestError(
                "Each MLflow tag is a name of 1 to 250 characters with a string value.",
                param=f"{where}.tags.{key}",
            )
    return {
        "experiment_name": experiment,
        "run_name": _optional_text(spec, "run_name", where),
        "tags": tags,
    }


def _optional_text(spec: dict[str, Any], key: str, where: str) -> str | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 256):
        raise InvalidRequestError(
            f"'{where}.{key}' must be a string of at most 256 characters or null.",
            param=f"{where}.{key}",
        )
    return value
