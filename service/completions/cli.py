"""``openft ask``: one question to a model and, with ``--compare``, to its base, side by side.

Greedy answers (``temperature: 0``) through the API, as any client gets them, so what it shows is
what the served model says.
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.ids import parse_fine_tuned_model_name
from service.jobs.cli import DEFAULT_BASE_URL, Api, ApiKey, BaseUrl, client_for, or_exit


def answer(api: Api, model: str, question: str, max_tokens: int) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    reply = or_exit(lambda: api.call("POST", "/chat/completions", json=body, timeout=300.0))
    return str(reply["choices"][0]["message"]["content"] or "").strip()


def ask(
    model: Annotated[str, typer.Argument(help="A model: a base model or ft:...")],
    question: Annotated[str, typer.Argument(help="What to ask.")],
    compare: Annotated[
        bool, typer.Option(help="Also ask the fine-tuned model's base, side by side.")
    ] = False,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 64,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = "",
) -> None:
    """Ask a model one question (greedy); --compare asks its base model too."""
    api = client_for(base_url, api_key)
    models = [model]
    fine_tuned = parse_fine_tuned_model_name(model)
    if compare and fine_tuned is not None:
        models.insert(0, fine_tuned.base)
    for name in models:  # one line each, so scripts and logs read it whole
        print(f"{name}: {answer(api, name, question, max_tokens)}", flush=True)
