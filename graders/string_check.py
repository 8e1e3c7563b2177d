"""The ``string_check`` grader: 1 or 0 by equality or containment of two rendered strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graders import templates
from graders.config import StringCheckGrader


def score(grader: StringCheckGrader, namespaces: Mapping[str, Any]) -> float:
    """``eq``/``ne`` compare exactly; ``like`` is 1 when the input contains the reference,
    ``ilike`` the same ignoring case (OpenAI's semantics; ``%`` and ``_`` are literal)."""
    given = templates.render(grader.input, namespaces)
    reference = templates.render(grader.reference, namespaces)
    if grader.operation == "eq":
        passed = given == reference
    elif grader.operation == "ne":
        passed = given != reference
    elif grader.operation == "like":
        passed = reference in given
    else:
        passed = reference.casefold() in given.casefold()
    return 1.0 if passed else 0.0
