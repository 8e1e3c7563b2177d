"""Prompt-length profiles and PSI: bins from the training data, PSI's known thresholds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from service.drift import (
    HASHED_BINS,
    PromptProfile,
    build_profile,
    build_token_sketch,
    js_distance,
    psi,
    request_texts,
)
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


def metrics_text(live: list[int], outside: int, tokens: tuple[int, int] = (0, 0)) -> str:
    lines = []
    for index, count in enumerate(tokens):
        lines.append(f'openft_drift_token_reference_share{{model="ft:m",bin="{index}"}} 0.5')
        lines.append(f'openft_drift_tokens_total{{model="ft:m",bin="{index}"}} {count}')
    for index, count in enumerate(live):
        lines.append(f'openft_drift_reference_share{{model="ft:m",bin="{index}"}} 0.25')
        lines.append(f'openft_drift_prompts_total{{model="ft:m",bin="{index}"}} {count}')
        lines.append(f'openft_drift_prompts_total{{model="ft:other",bin="{index}"}} 999')
    lines.append(f'openft_drift_prompts_outside_range_total{{model="ft:m"}} {outside}')
    return "\n".join(lines) + "\n"


def test_the_report_reads_the_counters_and_says_what_they_mean() -> None:
    steady = from_metrics(metrics_text([60, 50, 55, 60], outside=3, tokens=(900, 1000)), "ft:m")
    shifted = from_metrics(metrics_text([0, 0, 100, 150], outside=120, tokens=(0, 800)), "ft:m")
    quiet = from_metrics(metrics_text([1, 2, 3, 4], outside=0), "ft:m")

    assert steady.prompts == 225 and steady.psi is not None and steady.psi < 0.1
    assert steady.outside_share == pytest.approx(3 / 225)
    assert steady.verdict().startswith("no drift")
    assert steady.token_distance == pytest.approx(js_distance([0.5, 0.5], [900, 1000]))
    assert steady.verdict().endswith("the words are the training data's (token distance below 0.2)")
    assert shifted.psi is not None and shifted.psi > 0.25
    assert shifted.verdict().startswith("significant drift")
    assert shifted.token_distance is not None and shifted.token_distance > 0.5
    assert "the words differ from the training data's" in shifted.verdict()
    assert quiet.verdict().startswith("not enough traffic yet: 10 prompts")


def test_the_sketch_gives_frequent_tokens_a_bin_each_and_hashes_the_rest() -> None:
    counts = {7: 50, 3: 30, 11: 20, 1000: 1, 1016: 1}

    sketch = build_token_sketch(counts, top=2)

    assert sketch is not None and sketch.top == [7, 3]
    assert len(sketch.shares) == 2 + HASHED_BINS
    assert [sketch.bin_of(t) for t in (7, 3, 11, 1000, 1016)] == [0, 1, 2 + 11, 2 + 8, 2 + 8]
    assert sketch.shares[:2] == pytest.approx([50 / 102, 30 / 102])
    assert sum(sketch.shares) == pytest.approx(1.0)
    assert sketch.bin_counts([7, 7, 1000, 1016]) == [2, 0] + [0] * 8 + [2] + [0] * 7
    assert build_token_sketch({}) is None
    profile = build_profile([5, 6, 7], counts)
    assert profile is not None and profile.tokens is not None
    assert PromptProfile.from_dict(profile.as_dict()) == profile
    stored_before_sketches = {k: v for k, v in profile.as_dict().items() if k != "tokens"}
    assert PromptProfile.from_dict(stored_before_sketches).tokens is None


@pytest.mark.parametrize("seed", range(5))
def test_js_distance_is_small_for_the_same_vocabulary_and_large_for_another(seed: int) -> None:
    rng = random.Random(seed)
    weights = [1 / rank for rank in range(1, 301)]  # Zipf-like use of a 300-token vocabulary

    def tokens(first_id: int, n: int) -> list[int]:
        return rng.choices(range(first_id, first_id + 300), weights, k=n)

    sketch = build_token_sketch(Counter(tokens(0, 50_000)))
    assert sketch is not None

    same = js_distance(sketch.shares, sketch.bin_counts(tokens(0, 4000)))
    other = js_distance(sketch.shares, sketch.bin_counts(tokens(5000, 4000)))

    assert same is not None and same < 0.1
    assert other is not None and other > 0.5
    assert js_distance(sketch.shares, [0] * len(sketch.shares)) is None


def test_js_distance_is_the_formula_the_recording_rule_uses() -> None:
    # deploy/prometheus/rules_test.yml: the same shares give 0, disjoint bins give 1.
    assert js_distance([0.75, 0.25], [60, 20]) == pytest.approx(0.0, abs=1e-12)
    assert js_distance([1.0, 0.0], [0, 50]) == pytest.approx(1.0)
    assert js_distance([0.5, 0.5], [1, 0]) == pytest.approx(0.5579230452, rel=1e-9)


def test_the_prompt_text_of_chat_and_completions_requests() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            "not a message",
        ]
    }

    assert request_texts(body) == ["Be brief.", "Hi"]
    assert request_texts({"prompt": "Once"}) == ["Once"]
    assert request_texts({"prompt": ["a", "b", 3]}) == ["a", "b"]
    assert request_texts({"prompt": [1, 2, 3]}) == []
