"""Prompt-length profiles and PSI: bins from the training data, PSI's known thresholds."""

from __future__ import annotations

import random

import pytest

from service.drift import PromptProfile, build_profile, psi
from service.drift_report import from_metrics


def test_bins_are_the_training_deciles_and_shares_sum_to_one() -> None:
    lengths = list(range(1, 101))

    profile = build_profile(lengths)

    assert profile is not None
    assert profile.edges == [11, 21, 31, 41, 51, 61, 71, 81, 91]
    assert profile.shares == [0.1] * 10
    assert (profile.prompts, profile.shortest, profile.longest) == (100, 1, 100)
    assert [profile.bin_of(n) for n in (1, 10, 11, 55, 100, 5000)] == [0, 0, 1, 5, 9, 9]
    assert profile.outside(0) and profile.outside(101) and not profile.outside(50)
    assert PromptProfile.from_dict(profile.as_dict()) == profile


def test_repeated_lengths_merge_bins() -> None:
    profile = build_profile([30] * 50 + [40] * 50)

    assert profile is not None and profile.edges == [40]
    assert profile.shares == [0.5, 0.5]
    assert build_profile([]) is None


@pytest.mark.parametrize("seed", range(5))
def test_psi_is_small_in_distribution_and_large_when_prompts_shift(seed: int) -> None:
    rng = random.Random(seed)
    training = [int(rng.lognormvariate(4, 0.5)) for _ in range(2000)]
    profile = build_profile(training)
    assert profile is not None

    def counts(lengths: list[int]) -> list[int]:
        found = [0] * len(profile.shares)
        for length in lengths:
            found[profile.bin_of(length)] += 1
        return found

    same = [int(rng.lognormvariate(4, 0.5)) for _ in range(200)]
    longer = [int(rng.lognormvariate(4.8, 0.5)) for _ in range(200)]

    same_psi, shifted_psi = psi(profile.shares, counts(same)), psi(profile.shares, counts(longer))
    assert same_psi is not None and same_psi < 0.1
    assert shifted_psi is not None and shifted_psi > 0.25
    assert psi(profile.shares, [0] * len(profile.shares)) is None


def test_psi_is_the_formula_the_recording_rule_uses() -> None:
    # deploy/prometheus/rules_test.yml expects round(PSI * 1e6) == 6808228 for the same data.
    assert psi([0.1] * 10, [0] * 8 + [5, 5]) == pytest.approx(6.808228348909806, rel=1e-12)


def metrics_text(live: list[int], outside: int) -> str:
    lines = []
    for index, count in enumerate(live):
        lines.append(f'openft_drift_reference_share{{model="ft:m",bin="{index}"}} 0.25')
        lines.append(f'openft_drift_prompts_total{{model="ft:m",bin="{index}"}} {count}')
        lines.append(f'openft_drift_prompts_total{{model="ft:other",bin="{index}"}} 999')
    lines.append(f'openft_drift_prompts_outside_range_total{{model="ft:m"}} {outside}')
    return "\n".join(lines) + "\n"


def test_the_report_reads_the_counters_and_says_what_they_mean() -> None:
    steady = from_metrics(metrics_text([60, 50, 55, 60], outside=3), "ft:m")
    shifted = from_metrics(metrics_text([0, 0, 100, 150], outside=120), "ft:m")
    quiet = from_metrics(metrics_text([1, 2, 3, 4], outside=0), "ft:m")

    assert steady.prompts == 225 and steady.psi is not None and steady.psi < 0.1
    assert steady.outside_share == pytest.approx(3 / 225)
    assert steady.verdict().startswith("no drift")
    assert shifted.psi is not None and shifted.psi > 0.25
    assert shifted.verdict().startswith("significant drift")
    assert quiet.verdict().startswith("not enough traffic yet: 10 prompts")
