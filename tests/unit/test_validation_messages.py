from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.http.validation import JSON_BODY_UNPARSABLE, param_of, to_invalid_request


class Hyper(BaseModel):
    n_epochs: int = Field(ge=1, le=50)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    order: Literal["asc", "desc"] = "desc"
    limit: int = Field(default=1, ge=1)
    hyper: Hyper | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=4)


def first_error(data: object) -> tuple[str, str | None, str | None]:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(data)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]
    error = to_invalid_request(errors)
    return error.message, error.param, error.code


def test_param_paths_use_dots_and_indexes() -> None:
    assert param_of(("body", "messages", 0, "role")) == "messages[0].role"
    assert param_of(("query", "limit")) == "limit"
    assert param_of(("body",)) is None


@pytest.mark.parametrize(
    ("data", "message", "param"),
    [
        ({}, "Missing required parameter: 'model'.", "model"),
        ({"model": "m", "order": "up"}, "'up' is not one of ['asc', 'desc'] - 'order'", "order"),
        ({"model": "m", "limit": 0}, "0 is less than the minimum of 1 - 'limit'", "limit"),
        ({"model": "m", "limit": "x"}, "'x' is not of type 'integer' - 'limit'", "limit"),
        (
            {"model": "m", "hyper": {"n_epochs": 51}},
            "51 is greater than the maximum of 50 - 'hyper.n_epochs'",
            "hyper.n_epochs",
        ),
        ({"model": "m", "suffix": ""}, "'' is too short - 'suffix'", "suffix"),
        ({"model": 3}, "3 is not of type 'string' - 'model'", "model"),
        ({"model": "m", "extra": 1}, "Unrecognized request argument supplied: extra", "extra"),
    ],
)
def test_openai_style_messages(data: object, message: str, param: str) -> None:
    got_message, got_param, _ = first_error(data)

    assert (got_message, got_param) == (message, param)


def test_missing_parameter_has_openai_code() -> None:
    assert first_error({})[2] == "missing_required_parameter"


def test_unparsable_json_body() -> None:
    error = to_invalid_request([{"type": "json_invalid", "loc": ("body", 0), "msg": "bad"}])

    assert error.message == JSON_BODY_UNPARSABLE and error.status_code == 400
