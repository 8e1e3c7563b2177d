"""``openft drift report``: a fine-tuned model's prompt drift, in words, without Grafana.

With a Prometheus URL it reads the recording rules (PSI, out-of-range share and the token
distance over the last hour). Without one it scrapes the API's ``/metrics`` and computes the same
figures over every prompt the API has counted since it started.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.drift import js_distance, psi

MIN_PROMPTS = 200
# In-distribution hours of a few hundred prompts stay near 0.05; another vocabulary reaches 0.5+.
TOKEN_DISTANCE_NOTABLE = 0.2


@dataclass(frozen=True)
class DriftFigures:
    model: str
    prompts: int
    psi: float | None
    outside_share: float | None
    source: str
    token_distance: float | None = None

    def verdict(self) -> str:
        if self.psi is None or self.prompts < MIN_PROMPTS:
            return (
                f"not enough traffic yet: {self.prompts} prompts, PSI needs at least "
                f"{MIN_PROMPTS} in a window"
            )
        if self.psi < 0.1:
            lengths = "no drift: live prompt lengths match the training data (PSI < 0.1)"
        elif self.psi <= 0.25:
            lengths = "moderate drift (PSI 0.1-0.25): watch it; check answers on the new prompts"
        else:
            lengths = (
                "significant drift (PSI > 0.25): live prompts differ from the training data; "
                "consider fine-tuning again on recent traffic"
            )
        if self.token_distance is None:
            return lengths
        if self.token_distance < TOKEN_DISTANCE_NOTABLE:
            words = "the words are the training data's (token distance below 0.2)"
        else:
            words = (
                "the words differ from the training data's (token distance "
                f"{self.token_distance:.2f}; 0 the same, 1 nothing in common)"
            )
        return f"{lengths}\n{words}"


def from_metrics(text: str, model: str) -> DriftFigures:
    """Figures over all prompts counted by one API process (cumulative counters)."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    outside = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "openft_drift_prompts_outside_range_total":
                outside = int(sample.value)
            elif "bin" in sample.labels:
                found[sample.name][sample.labels["bin"]] = sample.value
    lengths = _compare(found["openft_drift_reference_share"], found["openft_drift_prompts_total"])
    tokens = _compare(
        found["openft_drift_token_reference_share"], found["openft_drift_tokens_total"]
    )
    prompts = round(sum(found["openft_drift_prompts_total"].values()))
    share = outside / prompts if prompts else None
    return DriftFigures(
        model,
        prompts,
        psi(*lengths) if lengths else None,
        share,
        "the API's counters since it started",
        js_distance(*tokens) if tokens else None,
    )


def _compare(
    reference: dict[str, float], live: dict[str, float]
) -> tuple[list[float], list[int]] | None:
    """Reference shares and live counts, bin by bin."""
    bins = sorted(reference, key=int)
    if not bins:
        return None
    return [reference[b] for b in bins], [round(live.get(b, 0)) for b in bins]


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
        one(f"openft:drift_token_js:1h{selector}"),
    )
