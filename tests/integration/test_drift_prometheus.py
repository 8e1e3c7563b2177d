"""Drift figures from a real Prometheus over a day and a half of simulated traffic.

Two gateway replicas count prompts with the real code (``Metrics.prompt_seen`` for lengths, the
``TokenDriftCounter`` thread for tokens) against a profile built from synthetic training prompts.
Their counters are written out every two minutes with timestamps, loaded into a real Prometheus
with ``promtool tsdb create-blocks-from openmetrics``, and the shipped recording rules, expanded
into single queries, are evaluated over every hour: in-distribution hours must keep PSI below 0.1
(in at least 95% of windows), and a shift to longer prompts in another vocabulary must push PSI
above 0.25 and the token distance up by the time 200 shifted prompts have arrived.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers

from inference.token_drift import TokenDriftCounter
from service.drift import PromptProfile, build_profile
from service.metrics import Metrics
from service.settings import BaseModelConfig
from tests.support import prometheus
from tests.support.ci import require

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "openft.yml"
MODEL = "ft:tiny-chat:acme:support:AbCd1234"
STEP_S = 120  # the simulated scrape interval
HOUR = 3600
STEADY_HOURS = 30
SHIFTED_HOURS = 2
PER_MINUTE = (4, 5)  # about 270 prompts an hour, over the rules' 200-prompt minimum
DRIFT_FAMILIES = (
    "openft_drift_prompts",
    "openft_drift_prompts_outside_range",
    "openft_drift_tokens",
)

TRAINING_WORDS = [f"harbour{i}" for i in range(300)]
OTHER_WORDS = [f"invoice{i}" for i in range(300)]
ZIPF = [1 / rank for rank in range(1, 301)]


def word_tokenizer() -> Tokenizer:
    vocabulary = {word: i for i, word in enumerate(["[UNK]", *TRAINING_WORDS, *OTHER_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


class Traffic:
    """Prompts drawn like the training prompts (steady) or longer, in other words (shifted)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def prompt(self, *, shifted: bool = False) -> str:
        length = max(1, int(self.rng.lognormvariate(4.4 if shifted else 3.3, 0.4)))
        words = OTHER_WORDS if shifted else TRAINING_WORDS
        return " ".join(self.rng.choices(words, ZIPF, k=length))


def expanded(record: str) -> str:
    """A recording rule as one query: every recorded name it uses replaced by its expression."""
    rules = {
        rule["record"]: " ".join(rule["expr"].split())
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    names = re.compile("|".join(re.escape(name) for name in sorted(rules, key=len, reverse=True)))
    query = rules[record]
    while names.search(query):
        # "group_left (...)" would read the parenthesis as its label list: give it an empty one.
        query = re.sub(r"\b(group_left|group_right) (?=openft:)", r"\1() ", query)
        query = names.sub(lambda found: f"({rules[found.group(0)]})", query)
    return query


class Replica:
    """One API process's drift accounting, run by the real code."""

    def __init__(self, name: str, tokenizer_dir: Path) -> None:
        self.name = name
        self.metrics = Metrics()
        self.tokens = TokenDriftCounter(self.metrics)
        self.base = BaseModelConfig(name="tiny-chat", path=str(tokenizer_dir))

    def serve(self, profile: PromptProfile, prompt: str, tokenizer: Tokenizer) -> None:
        assert profile.tokens is not None
        # vLLM's prompt_tokens, for a model whose template adds nothing around the text.
        self.metrics.prompt_seen(MODEL, profile, len(tokenizer.encode(prompt).ids))
        self.tokens.offer(MODEL, self.base, profile.tokens, [prompt])

    def samples(self) -> Iterator[tuple[str, str, float]]:
        """(family, sample line without value, value) of the drift counters, as scraped."""
        self.tokens.drain()
        for family in self.metrics.registry.collect():
            if family.name not in DRIFT_FAMILIES:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = {**sample.labels, "instance": self.name}
                rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                yield family.name, f"{sample.name}{{{rendered}}}", sample.value


def openmetrics(
    scrapes: list[tuple[float, list[tuple[str, str, float]]]], profile: PromptProfile
) -> str:
    """The scrapes as one OpenMetrics file: each family once, each series in time order.

    The reference shares are what ``JobsCollector`` exports for a model with this profile.
    """
    assert profile.tokens is not None
    series: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for at, samples in scrapes:
        for family, line, value in samples:
            series[family][line].append(f"{line} {value} {at:.3f}")
        for family, shares in (
            ("openft_drift_reference_share", profile.shares),
            ("openft_drift_token_reference_share", profile.tokens.shares),
        ):
            for index, share in enumerate(shares):
                line = f'{family}{{bin="{index}",model="{MODEL}"}}'
                series[family][line].append(f"{line} {share} {at:.3f}")
    lines = []
    for family, by_series in series.items():
        kind = "gauge" if family.endswith("reference_share") else "counter"
        lines.append(f"# TYPE {family} {kind}")
        for points in by_series.values():
            lines.extend(points)
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def history(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[prometheus.Prometheus, float, float]]:
    """A Prometheus holding the simulated history; yields it, the first scrape and the shift."""
    require(prometheus.binary() is not None, "Prometheus (Debian package prometheus)")
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool (Debian package prometheus)")
    workdir = tmp_path_factory.mktemp("drift-history")
    tokenizer = word_tokenizer()
    tokenizer.save(str(workdir / "tokenizer.json"))

    training = Traffic(seed=1)
    prompts = [training.prompt() for _ in range(2000)]
    encoded = [tokenizer.encode(prompt).ids for prompt in prompts]
    profile = build_profile(
        [len(ids) for ids in encoded], Counter(t for ids in encoded for t in ids)
    )
    assert profile is not None

    replicas = [Replica("a", workdir), Replica("b", workdir)]
    live = Traffic(seed=2)
    first = (int(time.time()) // HOUR - STEADY_HOURS - SHIFTED_HOURS - 3) * HOUR
    shift = first + STEADY_HOURS * HOUR
    scrapes = []
    for at in range(first, shift + SHIFTED_HOURS * HOUR, STEP_S):
        for _minute in range(STEP_S // 60):
            for _ in range(live.rng.randint(*PER_MINUTE)):
                replica = live.rng.choice(replicas)
                replica.serve(profile, live.prompt(shifted=at >= shift), tokenizer)
        scrapes.append((float(at + STEP_S), [s for r in replicas for s in r.samples()]))
    for replica in replicas:
        replica.tokens.stop()

    (workdir / "history.om").write_text(openmetrics(scrapes, profile))
    assert promtool is not None
    backfill = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "history.om", "data"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    with prometheus.started_prometheus(workdir, {"global": {"scrape_interval": "1m"}}) as server:
        yield server, float(first), float(shift)


def test_in_distribution_traffic_keeps_psi_below_0_1_in_95_percent_of_windows(
    history: tuple[prometheus.Prometheus, float, float],
) -> None:
    server, first, shift = history
    # Every full hour before the shift, each window [t - 1h, t] on its own.
    psi = server.values_over(expanded("openft:drift_psi:1h"), first + HOUR, shift, HOUR)
    distance = server.values_over(expanded("openft:drift_token_js:1h"), first + HOUR, shift, HOUR)

    assert len(psi) == STEADY_HOURS and len(distance) == STEADY_HOURS
    assert sum(value < 0.1 for value in psi.values()) >= 0.95 * len(psi), psi
    assert max(distance.values()) < 0.1, distance
    prompts = server.values_over(
        expanded("openft:drift_window_prompts:increase1h"), first + HOUR, shift, HOUR
    )
    assert min(prompts.values()) >= 200  # so every window was reported


def test_shifted_traffic_pushes_psi_over_0_25_within_200_prompts(
    history: tuple[prometheus.Prometheus, float, float],
) -> None:
    server, _, shift = history
    # At ~4.5 prompts a minute, 200 shifted prompts have arrived 45 minutes after the shift.
    at = shift + 46 * 60
    shifted = server.values_over(
        f"sum(increase(openft_drift_prompts_total[{46 * 60}s]))", at, at, 60
    )
    assert 200 <= next(iter(shifted.values())) < 250

    psi = server.values_over(expanded("openft:drift_psi:1h"), at, at, 60)
    distance = server.values_over(expanded("openft:drift_token_js:1h"), at, at, 60)
    outside = server.values_over(expanded("openft:drift_outside_share:1h"), at, at, 60)

    assert next(iter(psi.values())) > 0.25, psi
    assert next(iter(distance.values())) > 0.5, distance
    assert next(iter(outside.values())) > 0.1, outside
    before = server.values_over(expanded("openft:drift_psi:1h"), shift, shift, 60)
    outside_before = server.values_over(expanded("openft:drift_outside_share:1h"), shift, shift, 60)
    assert next(iter(before.values())) < 0.1, before
    assert next(iter(outside_before.values())) < 0.05, outside_before
