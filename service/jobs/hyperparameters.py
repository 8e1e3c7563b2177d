"""Checking requested hyperparameters ("auto" or a number in OpenAI's ranges)."""

from __future__ import annotations

from typing import Any

from service.errors import InvalidRequestError

# name -> (integer?, minimum, minimum exclusive?, maximum)
RANGES: dict[str, tuple[bool, float, bool, float | None]] = {
    "batch_size": (True, 1, False, 256),
    "learning_rate_multiplier": (False, 0, True, None),
    "n_epochs": (True, 1, False, 50),
}
DPO_RANGES = {"beta": (False, 0.0, True, 2.0), **RANGES}
REINFORCEMENT_RANGES = {
    **RANGES,
    "compute_multiplier": (False, 0.00001, True, 10.0),
    "eval_interval": (True, 1, False, None),
    "eval_samples": (True, 1, False, None),
}
REASONING_EFFORTS = ("default", "low", "medium", "high")


def checked_hyperparameters(
    values: dict[str, Any], prefix: str, method: str = "supervised"
) -> dict[str, Any]:
    """Every known hyperparameter, "auto" where not given; 400 in OpenAI's words otherwise."""
    ranges = {"dpo": DPO_RANGES, "reinforcement": REINFORCEMENT_RANGES}.get(method, RANGES)
    for name in values:
        if method == "reinforcement" and name == "reasoning_effort":
            continue
        if name not in ranges:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {prefix}.{name}", param=f"{prefix}.{name}"
            )
    checked = {}
    for name, limits in ranges.items():
        value = values.get(name, "auto")
        checked[name] = value if value == "auto" else _in_range(value, f"{prefix}.{name}", *limits)
    if method == "reinforcement":
        effort = values.get("reasoning_effort", "default")
        if effort not in REASONING_EFFORTS:
            raise InvalidRequestError(
                f"{effort!r} is not one of {list(REASONING_EFFORTS)} - '{prefix}.reasoning_effort'",
                param=f"{prefix}.reasoning_effort",
            )
        checked["reasoning_effort"] = effort
    return checked


def _in_range(
    value: Any, param: str, integer: bool, low: float, exclusive: bool, high: float | None
) -> int | float:
    kind = "integer" if integer else "number"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (integer and isinstance(value, float) and not value.is_integer()):
        raise InvalidRequestError(
            f"{value!r} is not of type '{kind}' or 'auto' - '{param}'", param=param
        )
    if value < low or (exclusive and value == low):
        words = "less than or equal to" if exclusive else "less than"
        raise InvalidRequestError(
            f"{value} is {words} the minimum of {low:g} - '{param}'", param=param
        )
    if high is not None and value > high:
        raise InvalidRequestError(
            f"{value} is greater than the maximum of {high:g} - '{param}'", param=param
        )
    return int(value) if integer else float(value)
