"""Per-model usage and latency of served requests (exported as metrics by the monitoring work)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass
class ModelUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds_total: float = 0.0
    seconds_to_first_token_total: float = 0.0


class UsageLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_model: defaultdict[str, ModelUsage] = defaultdict(ModelUsage)

    def record(
        self, model: str, usage: dict[str, Any] | None, first_token_s: float, total_s: float
    ) -> None:
        with self._lock:
            entry = self.by_model[model]
            entry.requests += 1
            entry.prompt_tokens += int((usage or {}).get("prompt_tokens") or 0)
            entry.completion_tokens += int((usage or {}).get("completion_tokens") or 0)
            entry.seconds_total += total_s
            entry.seconds_to_first_token_total += first_token_s
