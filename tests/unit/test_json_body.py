"""The JSON number rule (service/http/json_body.py) and the download header (http/download.py)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.routing import APIRoute

from service.app import create_app
from service.errors import InvalidRequestError
from service.http.download import attachment
from service.http.json_body import OpenAIRoute, parse
from service.settings import Settings


@pytest.mark.parametrize(
    ("body", "param", "literal"),
    [
        (b'{"temperature": NaN}', "temperature", "NaN"),
        (b'{"top_p": Infinity}', "top_p", "Infinity"),
        (b'{"a": [1, {"b": -Infinity}]}', "a[1].b", "-Infinity"),
        (
            b'{"hyperparameters": {"learning_rate_multiplier": 1e999}}',
            "hyperparameters.learning_rate_multiplier",
            "1e999",
        ),
        (b'{"seed": ' + b"9" * 5000 + b"}", "seed", "99999999999999999..."),
        (b"NaN", None, "NaN"),
        (b'{"x": 1, "y": NaN, "z": Infinity}', "y", "NaN"),  # the first, in document order
    ],
)
def test_non_finite_numbers_are_refused_naming_where(
    body: bytes, param: str | None, literal: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse(body)

    assert raised.value.param == param
    assert raised.value.status_code == 400
    assert raised.value.message.startswith(f"{literal} is not a finite number")


@pytest.mark.parametrize(
    "body",
    [b'{"temperature": 1e308, "n": 12345678901234567890}', b'{"s": "\\ud800"}', b"[1.5, -0.0]"],
)
def test_finite_json_reads_as_the_standard_library_reads_it(body: bytes) -> None:
    assert parse(body) == json.loads(body)


def test_text_that_is_not_json_stays_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse(b'{"temperature": 0.5')


def test_every_route_reads_bodies_by_the_rule(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    routes = [route for route in app.routes if isinstance(route, APIRoute)]

    assert routes
    assert [r.path for r in routes if not isinstance(r, OpenAIRoute)] == []


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ('a "quoted" name.txt', "a _quoted_ name.txt"),
        ("r\u00e9sum\u00e9.jsonl", "r_sum_.jsonl"),
        ("..", "download"),
        ("line\r\nbreak", "line__break"),
    ],
)
def test_download_names_are_encoded_and_carry_no_path(name: str, fallback: str) -> None:
    header = attachment(name)

    head, _, encoded = header.partition("; filename*=UTF-8''")
    assert head == f'attachment; filename="{fallback}"'
    assert unquote(encoded) == name
    assert not set(encoded) & set("/\\\"'; \r\n")
