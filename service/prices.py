"""What served tokens, trained tokens and accelerator hours cost at a base model's prices: the one
place cost is computed (metrics, usage reports, the job's estimate before training)."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import BaseModelConfig

MILLION = 1_000_000
HOUR_S = 3600


@dataclass(frozen=True)
class Cost:
    """Dollars, per kind of use; a price the base model does not set counts as zero."""

    input: float = 0.0
    output: float = 0.0
    training: float = 0.0
    accelerator: float = 0.0

    @property
    def total(self) -> float:
        return self.input + self.output + self.training + self.accelerator


def cost_of(
    price: BaseModelConfig,
    *,
    prompt_tokens: float = 0,
    completion_tokens: float = 0,
    trained_tokens: float = 0,
    training_seconds: float = 0.0,
) -> Cost:
    """What this use of ``price``'s base model costs."""
    return Cost(
        input=prompt_tokens * (price.input_price_per_1m_tokens or 0.0) / MILLION,
        output=completion_tokens * (price.output_price_per_1m_tokens or 0.0) / MILLION,
        training=trained_tokens * (price.training_price_per_1m_tokens or 0.0) / MILLION,
        accelerator=training_seconds / HOUR_S * (price.accelerator_price_per_hour or 0.0),
    )
