"""OpenAI's grader templates: ``{{ item.field }}``, ``{{ sample.output_text }}`` in strings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices", "output_audio")

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(r"\.\s*([A-Za-z_][\w-]*)|\[\s*(-?\d+)\s*\]|\[\s*[\"']([^\"']*)[\"']\s*\]")
_HEAD = re.compile(r"\s*([A-Za-z_]\w*)")


class TemplateError(Exception):
    """A reference that cannot be rendered; ``kind`` names OpenAI's error flag it raises."""

    def __init__(self, message: str, kind: str = "invalid_variable_error") -> None:
        super().__init__(message)
        self.kind = kind


def parse_reference(expression: str) -> tuple[str, tuple[str | int, ...]]:
    """``item.a[0].b`` as its namespace and path; TemplateError when it is not one."""
    head = _HEAD.match(expression)
    if head is None or head.group(1) not in NAMESPACES:
        raise TemplateError(
            f"'{{{{{expression}}}}}' is not a template variable: use {{{{ item.<field> }}}} or "
            "{{ sample.<field> }}"
        )
    path: list[str | int] = []
    position = head.end()
    rest = expression.rstrip()
    while position < len(rest):
        step = _STEP.match(rest, position)
        if step is None:
            raise TemplateError(f"'{{{{{expression}}}}}' is not a template variable")
        name, index, quoted = step.groups()
        path.append(int(index) if index is not None else (name or quoted or ""))
        position = step.end()
    namespace = head.group(1)
    if namespace == "sample" and path and path[0] not in SAMPLE_FIELDS:
        raise TemplateError(
            f"'{{{{{expression}}}}}': a sample has {', '.join(SAMPLE_FIELDS)}, not {path[0]!r}"
        )
    return namespace, tuple(path)


def check(text: str) -> None:
    """Every ``{{ … }}`` in ``text`` is a well-formed reference (nothing is looked up)."""
    for tag in _TAG.finditer(text):
        parse_reference(tag.group(1))


def references(text: str) -> list[str]:
    """The expressions of every ``{{ … }}`` in ``text``."""
    return [tag.group(1).strip() for tag in _TAG.finditer(text)]


def lookup(expression: str, namespaces: Mapping[str, Any]) -> Any:
    """The value ``expression`` names; TemplateError when a step is missing."""
    namespace, path = parse_reference(expression)
    value = namespaces[namespace]
    walked = namespace
    for step in path:
        value = _step(value, step, walked, expression.strip())
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    return value


def _step(value: Any, step: str | int, walked: str, expression: str) -> Any:
    if isinstance(step, int):
        if isinstance(value, list) and -len(value) <= step < len(value):
            return value[step]
    elif isinstance(value, Mapping) and step in value:
        return value[step]
    if walked == "sample.output_json" and value is None:
        raise TemplateError(
            f"'{{{{{expression}}}}}': the sample is not valid JSON", kind="sample_parse_error"
        )
    raise TemplateError(f"'{{{{{expression}}}}}': {walked} has no {step!r}")


def render(text: str, namespaces: Mapping[str, Any]) -> str:
    """``text`` with every reference replaced: strings as they are, anything else as JSON."""
    return _TAG.sub(lambda tag: as_text(lookup(tag.group(1), namespaces)), text)


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
