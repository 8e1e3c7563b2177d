"""text_similarity's local metrics: values worked out by hand, the edges, and no surprises."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graders.text_similarity import LOCAL_METRICS, _load_wordnet, _Synonyms, similarity

CAT = "the cat sat"
CAT_ON_MAT = "the cat sat on the mat"


def test_the_local_metrics_are_openais_less_cosine() -> None:
    assert LOCAL_METRICS == (
        "fuzzy_match",
        "bleu",
        "gleu",
        "meteor",
        "rouge_1",
        "rouge_2",
        "rouge_3",
        "rouge_4",
        "rouge_5",
        "rouge_l",
    )


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        # Output n-grams against the reference's (6 words); P = matched / output's, R = matched /
        # reference's, F = 2PR / (P + R).
        # 1-grams: the, cat, sat all match (the reference has "the" twice): P = 3/3, R = 3/6,
        # F = 2 * 1/2 / (3/2) = 2/3.
        ("rouge_1", 2 / 3),
        # 2-grams: "the cat", "cat sat" of the reference's 5: P = 1, R = 2/5, F = (4/5) / (7/5).
        ("rouge_2", 4 / 7),
        # 3-grams: "the cat sat" of the reference's 4: P = 1, R = 1/4, F = (1/2) / (5/4).
        ("rouge_3", 2 / 5),
        # No 4- or 5-grams in three words: P = R = 0.
        ("rouge_4", 0.0),
        ("rouge_5", 0.0),
        # LCS "the cat sat" = 3 words: P = 3/3, R = 3/6, as rouge_1.
        ("rouge_l", 2 / 3),
        # GLEU = min(P, R) over all 1..4-grams: the output has 3 + 2 + 1 = 6, all matched; the
        # reference has 6 + 5 + 4 + 3 = 18: min(6/6, 6/18).
        ("gleu", 1 / 3),
        # BLEU of a 3-word output re-weighs to (1/3, 1/3, 1/3): p1 = p2 = p3 = 1; brevity penalty
        # exp(1 - 6/3) = exp(-1).
        ("bleu", math.exp(-1)),
        # METEOR: m = 3 exact matches, P = 1, R = 1/2, Fmean = PR / (0.9P + 0.1R) = 10/19. nltk
        # aligns "the" to the reference's last "the" (position 4), so the matches (0,4) (1,1)
        # (2,2) form 2 chunks: penalty = 0.5 * (2/3)^3 = 4/27; score = 10/19 * 23/27.
        ("meteor", 230 / 513),
        # WRatio: the reference is twice as long (ratio 2 >= 1.5), so partial matches count,
        # scaled by 0.9; the output is a substring of it: partial_ratio = 100 -> 90.
        ("fuzzy_match", 0.9),
    ],
)
def test_the_cat_sat_against_the_cat_sat_on_the_mat(metric: str, expected: float) -> None:
    assert similarity(metric, CAT, CAT_ON_MAT) == pytest.approx(expected, abs=1e-12)


def test_bleu_of_a_near_miss_is_the_geometric_mean_of_its_precisions() -> None:
    # "the cat sat on a mat" against "the cat sat on the mat", same length (brevity penalty 1):
    # p1 = 5/6, p2 = 3/5 (the cat, cat sat, sat on), p3 = 2/4, p4 = 1/3 (the cat sat on).
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** (1 / 4)  # = (1/12)^(1/4)
    assert similarity("bleu", "the cat sat on a mat", CAT_ON_MAT) == pytest.approx(expected)


def test_bleu_smooths_a_missing_order_with_method4() -> None:
    # "a cat sat on my mat": p1 = 4/6, p2 = 2/5, p3 = 1/4 (cat sat on), p4 = 0/3. Method 4
    # gives the first empty order 1 / (2^1 * 5 / ln 6) matches out of 3: p4 = ln 6 / 30.
    expected = (4 / 6 * 2 / 5 * 1 / 4 * math.log(6) / 30) ** (1 / 4)
    assert similarity("bleu", "a cat sat on my mat", CAT_ON_MAT) == pytest.approx(expected)


def test_meteor_matches_wordnet_synonyms() -> None:
    # "car" and "auto" share WordNet's car.n.01: m = 3 in one chunk, P = R = 1, so the score is
    # 1 - 0.5 * (1/3)^3 = 53/54. Without WordNet: m = 2 in 2 chunks, Fmean = 2/3, score 1/3.
    assert similarity("meteor", "the car stopped", "the auto stopped") == pytest.approx(53 / 54)


def test_meteor_of_the_same_words_in_another_case_is_one() -> None:
    assert similarity("meteor", "The cat sat", "the CAT sat") == 1.0


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        # Equal lengths: ratio = 2 * LCS / (4 + 4) = 2 * 3 / 8 (abc); no token form does better.
        ("abcd", "abce", 0.75),
        # token_sort_ratio = 100 (same words) scaled by 0.95 beats ratio <= 2 * 10 / 22.
        ("world hello", "hello world", 0.95),
        # default_process lowercases and turns punctuation into spaces, then trims.
        ("Hello World!", "hello world", 1.0),
        # ... so "hello  world" (two spaces, 12 characters) against 11: ratio = 2 * 11 / 23, above
        # token_sort_ratio's 100 * 0.95 (its tokens are the same two words).
        ("Hello, World", "hello world", 22 / 23),
        ("HELLO WORLD", "hello world", 1.0),
    ],
)
def test_fuzzy_match_is_wratio_of_the_processed_strings(
    output: str, reference: str, expected: float
) -> None:
    assert similarity("fuzzy_match", output, reference) == pytest.approx(expected)


IDENTICAL = [
    "hello",
    "The cat sat on the mat.",
    "Don't panic: 42 is the answer, isn't it?",
    "?!",
    "日本語のテキスト",
    "naïve café",
]


@pytest.mark.parametrize("metric", LOCAL_METRICS)
@pytest.mark.parametrize("text", IDENTICAL)
def test_identical_text_scores_one(metric: str, text: str) -> None:
    assert similarity(metric, text, text) == 1.0


@pytest.mark.parametrize("metric", LOCAL_METRICS)
def test_identical_long_text_scores_one_without_the_shortcut(metric: str) -> None:
    # Trailing whitespace makes the strings differ, so each metric computes: every one gives 1.
    text = "a quick brown fox jumps over the lazy dog near the river bank today"
    assert similarity(metric, text, text + " ") == 1.0


@pytest.mark.parametrize("metric", LOCAL_METRICS)
def test_disjoint_text_scores_zero(metric: str) -> None:
    assert similarity(metric, "xyz", "abc") == 0.0


@pytest.mark.parametrize("metric", [m for m in LOCAL_METRICS if m != "fuzzy_match"])
def test_disjoint_words_score_zero(metric: str) -> None:
    # fuzzy_match compares characters (the spaces match), so only the word metrics are 0.
    assert similarity(metric, "green apples fall", "blue rivers run quietly") == 0.0


@pytest.mark.parametrize("metric", LOCAL_METRICS)
@pytest.mark.parametrize(
    ("output", "reference"),
    [("", "the cat"), ("", ""), ("   \n", "the cat"), (" ", " "), ("the cat", ""), ("a", "\t")],
)
def test_an_empty_output_or_reference_scores_zero(metric: str, output: str, reference: str) -> None:
    assert similarity(metric, output, reference) == 0.0


@pytest.mark.parametrize("metric", ["cosine", "rouge_6", "rougeL", "BLEU", ""])
def test_an_unknown_metric_is_a_value_error(metric: str) -> None:
    with pytest.raises(ValueError, match="unknown text_similarity metric"):
        similarity(metric, "a", "a")


_WORDS = [
    "the", "a", "of", "to", "and", "in", "is", "it", "that", "was", "for", "on", "are", "with",
]  # fmt: skip
_LONG = " ".join(random.Random(7).choice(_WORDS) for _ in range(1500))
ODD = [
    "",
    " ",
    "!!!",
    "?!.,;:-()",
    "'\"`",
    "日本語のテキスト。次の文。",
    "café naïve résumé Ελληνικά",
    "🙂🙃 emoji 🙂",
    "\x00\x01\x7f",
    "Mr. Smith... e.g. U.S. $3.50",
    "n't 's 'll",
    "y" * 1200,  # nltk < 3.10's Porter stemmer recursed once per "y" (limit 1000)
    _LONG,
]


@pytest.mark.parametrize("metric", LOCAL_METRICS)
def test_odd_inputs_give_a_float_in_the_unit_interval(metric: str) -> None:
    for output in ODD:
        for reference in [*ODD, "the cat sat on the mat"]:
            value = similarity(metric, output, reference)
            assert isinstance(value, float)
            assert 0.0 <= value <= 1.0, (output[:20], reference[:20], value)


@settings(max_examples=300, deadline=None)
@given(
    output=st.lists(st.sampled_from(["the", "cat", "Sat", "on", "mat", "!", "a1"]), max_size=25),
    reference=st.lists(st.sampled_from(["the", "cat", "sat", "on", "MAT", "?", "a1"]), max_size=25),
)
def test_rouge_l_is_rouge_scores_own(output: list[str], reference: list[str]) -> None:
    # rouge_l computes the LCS with rapidfuzz (rouge-score's table is quadratic in Python).
    from rouge_score.rouge_scorer import RougeScorer

    out, ref = " ".join(output), " ".join(reference)
    expected = RougeScorer(["rougeL"]).score(ref, out)["rougeL"].fmeasure if ref.strip() else 0.0
    assert similarity("rouge_l", out, ref) == (1.0 if out == ref and out.strip() else expected)


def test_wordnet_lookups_from_many_threads_get_what_one_thread_gets() -> None:
    # nltk's reader seeks and reads one shared handle per data file: unserialised, threads read
    # each other's lines (WordNetError, wrong synsets); a tiny switch interval makes that likely.
    reader = _load_wordnet()
    words = sorted(reader.all_lemma_names("n"))[::40][:2000]
    expected = [[synset.name() for synset in reader.synsets(word)] for word in words]
    synonyms = _Synonyms(_load_wordnet())
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(lambda w: [s.name() for s in synonyms.synsets(w)], words))
    finally:
        sys.setswitchinterval(interval)
    assert found == expected


def test_importing_the_module_loads_none_of_the_libraries() -> None:
    code = (
        "import sys, graders.text_similarity\n"
        "loaded = [m for m in ('nltk', 'rouge_score', 'rapidfuzz', 'absl') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
