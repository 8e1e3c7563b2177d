"""When a failed delivery is tried again: exponential backoff with jitter, then giving up."""

from __future__ import annotations

import random

FACTOR = 4.0
MAX_DELAY_S = 6 * 3600
JITTER = 0.2  # +-20 %, so deliveries that failed together do not retry together
_RNG = random.Random()


def backoff_seconds(attempts: int, base_s: float, rng: random.Random | None = None) -> float:
    """The wait after ``attempts`` failed attempts: base, x4 each time, at most six hours.

    With the default 5 s base: about 5 s, 20 s, 80 s, 5 min, 21 min, 85 min, 5.7 h, then 6 h.
    """
    delay = min(base_s * FACTOR ** (attempts - 1), MAX_DELAY_S)
    spread = (rng or _RNG).uniform(1 - JITTER, 1 + JITTER)
    return delay * spread


def retry_delay(
    attempts: int, *, base_s: float, max_attempts: int, rng: random.Random | None = None
) -> float | None:
    """How long to wait after ``attempts`` failed attempts, or None: give up."""
    if attempts >= max_attempts:
        return None
    return backoff_seconds(attempts, base_s, rng)
