"""``openft drift report``: a fine-tuned model's prompt drift, in words, without Grafana.

With a Prometheus URL it reads the recording rules (PSI and out-of-range share over the last
hour). Without one it scrapes the API's ``/metrics`` and computes the same figures over every
prompt that API process has counted since it started.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.drift import psi

MIN_PROMPTS = 200


@dataclass(frozen=True)
class DriftFigures:
    model: str
    prompts: int
    psi: float | None
    outside_share: float | None
    source: str

    def verdict(self) -> str:
        if self.psi is None or self.prompts < MIN_PROMPTS:
            return (
                f"not enough traffic yet: {self.prompts} prompts, PSI needs at least "
                f"{MIN_PROMPTS} in a window"
            )
        if self.psi < 0.1:
            return "no drift: live prompt lengths match the training data (PSI < 0.1)"
        if self.psi <= 0.25:
            return "moderate drift (PSI 0.1-0.25): watch it; check answers on the new prompts"
        return (
            "significant drift (PSI > 0.25): live prompts differ from the training data; "
            "consider fine-tuning again on recent traffic"
        )


def from_metrics(text: str, model: str) -> DriftFigures:
    """Figures over all prompts counted by one API process (cumulative counters)."""
    reference: dict[str, float] = {}
    live: dict[str, int] = {}
    outside = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "openft_drift_reference_share":
                reference[sample.labels["bin"]] = sample.value
            elif sample.name == "openft_drift_prompts_total":
                live[sample.labels["bin"]] = int(sample.value)
            elif sample.name == "openft_drift_prompts_outside_range_total":
                outside = int(sample.value)
    bins = sorted(reference, key=int)
    prompts = sum(live.values())
    value = psi([reference[b] for b in bins], [live.get(b, 0) for b in bins]) if bins else None
    share = outside / prompts if prompts else None
    return DriftFigures(model, prompts, value, share, "the API's counters since it started")


def from_prometheus(url: str, model: str) -> DriftFigures:
    """Figures over the last hour from the recording rules."""

    def one(query: str) -> float | None:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=10)
        response.raise_for_status()
        result = response.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    selector = f'{{model="{model}"}}'
    prompts = one(f"openft:drift_window_prompts:increase1h{selector}") or 0.0
    return DriftFigures(
        model,
        round(prompts),
        one(f"openft:drift_psi:1h{selector}"),
        one(f"openft:drift_outside_share:1h{selector}"),
        "Prometheus, the last hour",
    )
