"""One project never sees another's files: 404, never 403, for every Files operation."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from service.auth.service import IssuedKey


def test_other_projects_files_are_invisible(
    make_client: Callable[..., openai.OpenAI], new_project: Callable[[], IssuedKey]
) -> None:
    alice = make_client(new_project().key)
    bob = make_client(new_project().key)
    secret = alice.files.create(file=("secret.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    bob.files.create(file=("own.txt", b"mine"), purpose="user_data")

    assert secret.id not in [f.id for f in bob.files.list()]
    for attempt in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError) as error:
            attempt(secret.id)
        assert error.value.message.endswith(f"No such File object: {secret.id}")
    with pytest.raises(openai.NotFoundError):
        bob.files.list(after=secret.id)

    assert alice.files.retrieve(secret.id).id == secret.id
    assert alice.files.content(secret.id).read() == b'{"a": 1}\n'
