"""What ``openft jobs follow`` shows of a step: the training loss, or an RFT job's rewards."""

from __future__ import annotations

from service.jobs.cli import _figure, _Seen


def test_a_supervised_step_shows_its_loss() -> None:
    assert _figure({"step": 3, "train_loss": 0.52341}, _Seen()) == "loss 0.523"
    assert _figure({"step": 3}, _Seen()) == "loss -"


def test_an_rft_step_shows_its_reward_and_the_last_validation_reward() -> None:
    seen = _Seen()
    assert _figure({"step": 1, "train_loss": 0.1, "train_mean_reward": 0.25}, seen) == (
        "reward 0.25"
    )
    validated = {"step": 2, "train_mean_reward": 0.5, "full_valid_mean_reward": 0.75}
    assert _figure(validated, seen) == "reward 0.50 (valid 0.75)"
    assert _figure({"step": 3, "train_mean_reward": 0.625}, seen) == "reward 0.62 (valid 0.75)"
