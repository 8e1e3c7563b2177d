"""A job's ``integrations``: what the deployment is configured for, OpenAI's W&B fields and
echo (the run id is the job's id), OpenFT's MLflow type, and a 400 naming the field otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import InvalidRequestError
from service.jobs.integrations import checked_integrations, with_run_ids
from service.settings import Settings

BOTH = ("wandb", "openft_mlflow")


def test_wandb_is_stored_as_openai_echoes_it() -> None:
    given = [{"type": "wandb", "wandb": {"project": "bot", "entity": "acme", "tags": ["a"]}}]
    stored = with_run_ids(checked_integrations(given, BOTH), "ftjob-1")
    assert stored == [
        {
            "type": "wandb",
            "wandb": {
                "project": "bot", "name": None, "entity": "acme", "tags": ["a"],
                "run_id": "ftjob-1",
            },
        }
    ]  # fmt: skip


def test_mlflow_gets_its_default_experiment() -> None:
    given = [{"type": "openft_mlflow", "openft_mlflow": {}}]
    assert checked_integrations(given, BOTH) == [
        {
            "type": "openft_mlflow",
            "openft_mlflow": {"experiment_name": "openft", "run_name": None, "tags": {}},
        }
    ]


@pytest.mark.parametrize(
    ("given", "available", "param", "words"),
    [
        ({"type": "comet"}, BOTH, "integrations[0].type", "is not one of"),
        ({"type": "wandb", "wandb": {"project": "p"}}, (), "integrations[0].type", "WANDB_API_KEY"),
        ({"type": "openft_mlflow", "openft_mlflow": {}}, ("wandb",), "integrations[0].type",
         "OPENFT_MLFLOW_TRACKING_URI"),
        ({"type": "wandb"}, BOTH, "integrations[0].wandb", "Missing required"),
        ({"type": "wandb", "wandb": {"name": "n"}}, BOTH, "integrations[0].wandb.project",
         "Missing required"),
        ({"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}, BOTH,
         "integrations[0].wandb.tags[0]", "64 characters"),
        ({"type": "wandb", "wandb": {"project": "p", "tags": ["t"] * 51}}, BOTH,
         "integrations[0].wandb.tags", "at most 50"),
        ({"type": "wandb", "wandb": {"project": "p", "entity": 3}}, BOTH,
         "integrations[0].wandb.entity", "must be a string"),
        ({"type": "openft_mlflow", "openft_mlflow": {"tags": {"k": 1}}}, BOTH,
         "integrations[0].openft_mlflow.tags.k", "string value"),
        ("wandb", BOTH, "integrations[0].type", "is not one of"),
    ],
)  # fmt: skip
def test_what_cannot_be_sent_is_a_400_naming_the_field(
    given: Any, available: tuple[str, ...], param: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        checked_integrations([given], available)
    assert refused.value.param == param
    assert words in refused.value.message


def test_a_deployment_is_configured_by_its_operators_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WANDB_API_KEY", "WANDB_MODE", "OPENFT_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().integrations == ()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert Settings().integrations == ("wandb",)
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OPENFT_MLFLOW_TRACKING_URI", "sqlite:///m.db")
    assert Settings().integrations == BOTH
