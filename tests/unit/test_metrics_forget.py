"""A deleted model's series leave the API process's registry; other models' stay."""

from __future__ import annotations

from prometheus_client import generate_latest

from service.drift import PromptProfile
from service.metrics import Metrics
from service.settings import BaseModelConfig

BASE = BaseModelConfig(
    name="tiny-chat", path="/nowhere", input_price_per_1m_tokens=1.0, output_price_per_1m_tokens=2.0
)
USAGE = {"prompt_tokens": 12, "completion_tokens": 5}


def _serve(metrics: Metrics, model: str) -> None:
    metrics.served(model=model, base=BASE, project="p", usage=USAGE, first_token_s=0.1, total_s=0.2)
    metrics.failed(model=model, base_model=BASE.name, project="p", status=503)
    metrics.prompt_seen(model, PromptProfile([8, 16], [0.3, 0.4, 0.3], 10, 4, 32), 12)


def test_forget_drops_every_series_of_the_model() -> None:
    metrics = Metrics()
    _serve(metrics, "ft:tiny-chat:p::gone1234")
    _serve(metrics, "ft:tiny-chat:p::kept1234")

    gone = metrics.forget("ft:tiny-chat:p::gone1234")

    text = generate_latest(metrics.registry).decode()
    assert gone > 10
    assert "gone1234" not in text
    assert 'model="ft:tiny-chat:p::kept1234"' in text
    # Served again later (a model of the same name cannot come back, but a checkpoint
    # name could be asked for by mistake): counted from zero, bins set up again.
    _serve(metrics, "ft:tiny-chat:p::gone1234")
    assert "gone1234" in generate_latest(metrics.registry).decode()


def test_served_tokens_are_costed_at_the_base_models_prices() -> None:
    metrics = Metrics()

    _serve(metrics, "ft:tiny-chat:p::priced12")

    labels = {"model": "ft:tiny-chat:p::priced12", "base_model": "tiny-chat", "project": "p"}
    cost = metrics.registry.get_sample_value
    assert cost("openft_cost_usd_total", {"kind": "input", **labels}) == 12 * 1.0 / 1e6
    assert cost("openft_cost_usd_total", {"kind": "output", **labels}) == 5 * 2.0 / 1e6
