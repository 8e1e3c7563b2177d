"""How "auto" hyperparameters resolve: OpenAI's epoch rule, and the base model's multiplier."""

from __future__ import annotations

import pytest

from service.settings import BaseModelConfig
from trainer.hyperparameters import resolve


@pytest.mark.parametrize(
    ("n_examples", "epochs", "batch_size"),
    [(10, 10, 1), (20, 5, 1), (50, 3, 1), (200, 3, 1), (1000, 3, 2), (20_000, 1, 40)],
)
def test_auto_follows_openai_epoch_rule(n_examples: int, epochs: int, batch_size: int) -> None:
    hp = resolve({}, n_examples, auto_learning_rate_multiplier=2.0)

    assert (hp.n_epochs, hp.batch_size) == (epochs, batch_size)


def test_auto_multiplier_is_the_base_models_and_a_number_given_wins() -> None:
    base = BaseModelConfig(name="m", path="/m", auto_learning_rate_multiplier=3.0)

    auto = resolve({"learning_rate_multiplier": "auto"}, 36, auto_learning_rate_multiplier=3.0)
    given = resolve({"learning_rate_multiplier": 0.5}, 36, auto_learning_rate_multiplier=3.0)

    assert BaseModelConfig(name="m", path="/m").auto_learning_rate_multiplier == 2.0
    assert base.auto_learning_rate_multiplier == auto.learning_rate_multiplier == 3.0
    assert given.learning_rate_multiplier == 0.5
    assert auto.as_dict()["learning_rate_multiplier"] == 3.0
