"""Every Prometheus metric OpenFT exports, defined here and nowhere else.

Names are ``openft_*``; labels stay low-cardinality: route, method, status, model, base_model,
project (and job for the few running jobs). Request metrics are counted as requests happen;
job metrics are read from the database at scrape time (``JobsCollector``), so every API replica
reports the same truth and nothing is lost when a worker restarts.

When ``openft serve --api-workers N`` runs several API processes, ``PROMETHEUS_MULTIPROC_DIR`` is
set for them: each process writes its counters and histograms to files there and a scrape,
whichever process answers it, sums them all (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.db.database import Database
from service.db.models import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Project,
    UsageHour,
)
from service.drift import PromptProfile, TokenSketch
from service.gateway import ServerStatus
from service.prices import cost_of
from service.settings import BaseModelConfig

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The process's metrics, in their own registry (tests build as many as they like).

    ``registry`` is what ``/metrics`` exposes: the metrics below, or in multiprocess mode the
    sum over every API process's files; collectors read at scrape time are added to it.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if os.environ.get(MULTIPROCESS_DIR_ENV):
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            r = CollectorRegistry()  # this process's values reach a scrape through its files
        self._define_http(r)
        self._define_inference(r)
        self._define_drift(r)
        self._drift_models: set[str] = set()
        self._token_drift_models: set[str] = set()
        self.webhook_deliveries = Counter(
            "openft_webhook_deliveries", "Webhook delivery attempts, by result "
            "(delivered, retrying, failed: given up).", ["result"], registry=r,
        )  # fmt: skip
        self.batch_lines = Counter(
            "openft_batch_lines", "Batch lines answered, by endpoint and outcome (completed: "
            "status 200, in the output file; failed: in the error file).",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip

    def _define_http(self, r: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "openft_http_requests", "HTTP requests served.", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "openft_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def _define_inference(self, r: CollectorRegistry) -> None:
        model_labels = ["model", "base_model", "project"]
        self.inference_requests = Counter(
            "openft_inference_requests", "Chat and completion requests, by outcome.",
            [*model_labels, "status"], registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "openft_inference_prompt_tokens", "Prompt tokens served.", model_labels, registry=r
        )
        self.completion_tokens = Counter(
            "openft_inference_completion_tokens", "Completion tokens served.", model_labels,
            registry=r,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "openft_inference_time_to_first_token_seconds",
            "Time from the request to its first token (the whole answer when not streamed).",
            ["model", "base_model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "openft_inference_duration_seconds", "Time to serve a whole request.",
            ["model", "base_model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "openft_cost_usd", "Cost of what was served, at the base model's prices.",
            ["kind", *model_labels], registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "openft_upstream_requests", "Chat and completion requests sent to each vLLM "
            "replica of a base model.", ["base_model", "replica"], registry=r,
        )  # fmt: skip
        self.upstream_ready = Gauge(
            "openft_upstream_ready", "1 while a vLLM replica answers its health checks (as every "
            "live API process sees it), else 0.", ["base_model", "replica"], registry=r,
            multiprocess_mode="livemin",
        )  # fmt: skip

    def _define_drift(self, r: CollectorRegistry) -> None:
        self.drift_prompts = Counter(
            "openft_drift_prompts", "Prompts to fine-tuned models per bin of the training "
            "data's prompt-length profile (with openft_drift_reference_share: PSI).",
            ["model", "bin"], registry=r,
        )  # fmt: skip
        self.drift_outside = Counter(
            "openft_drift_prompts_outside_range",
            "Prompts shorter or longer than every training prompt of the model.", ["model"],
            registry=r,
        )  # fmt: skip
        self.drift_tokens = Counter(
            "openft_drift_tokens", "Prompt tokens of requests to fine-tuned models per bin of "
            "the training data's token sketch (with openft_drift_token_reference_share: "
            "Jensen-Shannon distance).", ["model", "bin"], registry=r,
        )  # fmt: skip
        self.drift_token_samples_dropped = Counter(
            "openft_drift_token_samples_dropped",
            "Prompts not tokenized for drift because the tokenizing queue was full.", ["model"],
            registry=r,
        )  # fmt: skip

    @property
    def _per_model(self) -> tuple[Counter | Histogram, ...]:
        return (
            self.inference_requests,
            self.prompt_tokens,
            self.completion_tokens,
            self.first_token_seconds,
            self.inference_seconds,
            self.drift_prompts,
            self.drift_outside,
            self.drift_tokens,
            self.drift_token_samples_dropped,
            self.cost,
        )

    def served(
        self,
        *,
        model: str,
        base: BaseModelConfig,
        project: str,
        usage: dict[str, Any] | None,
        first_token_s: float,
        total_s: float,
    ) -> tuple[int, int]:
        """Count one answered request; returns its (prompt, completion) tokens."""
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        labels = {"model": model, "base_model": base.name, "project": project}
        self.inference_requests.labels(**labels, status="ok").inc()
        self.prompt_tokens.labels(**labels).inc(prompt)
        self.completion_tokens.labels(**labels).inc(completion)
        self.first_token_seconds.labels(model, base.name).observe(first_token_s)
        self.inference_seconds.labels(model, base.name).observe(total_s)
        cost = cost_of(base, prompt_tokens=prompt, completion_tokens=completion)
        if base.input_price_per_1m_tokens:
            self.cost.labels(kind="input", **labels).inc(cost.input)
        if base.output_price_per_1m_tokens:
            self.cost.labels(kind="output", **labels).inc(cost.output)
        return prompt, completion

    def prompt_seen(self, model: str, profile: PromptProfile, prompt_tokens: int) -> None:
        """Count a prompt in its bin; a model's bins all start at zero so PSI sees every bin."""
        if model not in self._drift_models:
            self._drift_models.add(model)
            for index in range(len(profile.shares)):
                self.drift_prompts.labels(model, str(index))
            self.drift_outside.labels(model)
        self.drift_prompts.labels(model, str(profile.bin_of(prompt_tokens))).inc()
        if profile.outside(prompt_tokens):
            self.drift_outside.labels(model).inc()

    def tokens_seen(self, model: str, sketch: TokenSketch, tokens: Sequence[int]) -> None:
        """Count a prompt's tokens per sketch bin; every bin of a model starts at zero."""
        if model not in self._token_drift_models:
            self._token_drift_models.add(model)
            for index in range(len(sketch.shares)):
                self.drift_tokens.labels(model, str(index))
        for index, count in enumerate(sketch.bin_counts(tokens)):
            if count:
                self.drift_tokens.labels(model, str(index)).inc(count)

    def forget(self, model: str) -> int:
        """Drop every series of a deleted fine-tuned model, so a long-running API process does
        not keep them forever; returns how many went.

        Prometheus keeps what it already scraped, so ``increase()`` over a window that saw the
        model still counts it."""
        gone = 0
        for metric in self._per_model:
            # prometheus_client has no public way to list a metric's children.
            names = list(metric._labelnames)
            index = names.index("model")
            for labels in list(metric._metrics):
                if labels[index] == model:
                    metric.remove(*labels)
                    gone += 1
        self._drift_models.discard(model)
        self._token_drift_models.discard(model)
        return gone

    def failed(self, *, model: str, base_model: str, project: str, status: int) -> None:
        self.inference_requests.labels(model, base_model, project, str(status)).inc()


class JobsCollector(Collector):
    """Job metrics read from the database when Prometheus scrapes."""

    def __init__(
        self,
        db: Database,
        prices: dict[str, BaseModelConfig],
        budgets: dict[str, float] | None = None,
    ) -> None:
        self.db = db
        self.prices = prices
        self.budgets = budgets or {}

    def describe(self) -> Iterator[Metric]:
        """Nothing to ask the database for when registering (it may not be migrated yet)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as session:
            families = [
                *self._queue(session),
                *self._training(session),
                *self._running(session),
                self._budgets(),
                self._durations(session),
                *self._forgetting(session),
                *self._drift_references(session),
            ]
        yield from families

    @staticmethod
    def _queue(session: Any) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        jobs = GaugeMetricFamily("openft_jobs", "Fine-tuning jobs by status.", labels=["status"])
        waiting = GaugeMetricFamily(
            "openft_queue_oldest_wait_seconds", "Age of the oldest job waiting to be trained."
        )
        for status, count in session.execute(
            select(FineTuningJob.status, func.count()).group_by(FineTuningJob.status)
        ):
            jobs.add_metric([status], count)
        oldest = session.scalar(
            select(func.min(FineTuningJob.created_at)).where(
                FineTuningJob.status.in_(("validating_files", "queued"))
            )
        )
        waiting.add_metric([], max(0.0, time.time() - oldest) if oldest else 0.0)
        return jobs, waiting

    def _training(self, session: Any) -> tuple[CounterMetricFamily, ...]:
        """Trained tokens, training time and their cost per base model and project, from the
        durable usage rows (succeeded jobs)."""
        labels = ["base_model", "project"]
        trained = CounterMetricFamily(
            "openft_trained_tokens", "Tokens trained by succeeded jobs.", labels=labels
        )
        training_time = CounterMetricFamily(
            "openft_training_seconds", "Seconds spent training succeeded jobs.", labels=labels
        )
        training_cost = CounterMetricFamily(
            "openft_cost_training_usd",
            "Cost of succeeded jobs: trained tokens and accelerator hours at their prices.",
            labels=labels,
        )
        for base, slug, token_sum, second_sum in session.execute(
            select(
                UsageHour.base_model,
                Project.slug,
                func.sum(UsageHour.trained_tokens),
                func.sum(UsageHour.training_seconds),
            )
            .join(Project, Project.id == UsageHour.project_id)
            .group_by(UsageHour.base_model, Project.slug)
        ):
            tokens, seconds = float(token_sum or 0), float(second_sum or 0)
            trained.add_metric([base, slug], tokens)
            training_time.add_metric([base, slug], seconds)
            price = self.prices.get(base)
            if price is not None:
                cost = cost_of(price, trained_tokens=tokens, training_seconds=seconds)
                training_cost.add_metric([base, slug], cost.training + cost.accelerator)
        return trained, training_time, training_cost

    @classmethod
    def _running(cls, session: Any) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        """The latest training loss and step of each running job."""
        labels = ["job", "base_model", "project"]
        loss = GaugeMetricFamily(
            "openft_running_job_train_loss", "Latest training loss of each running job.",
            labels=labels,
        )  # fmt: skip
        step = GaugeMetricFamily(
            "openft_running_job_step", "Latest step of each running job.", labels=labels
        )
        for job_id, base, slug, data in cls._latest_metrics(session):
            loss.add_metric([job_id, base, slug], float(data.get("train_loss", 0.0)))
            step.add_metric([job_id, base, slug], float(data.get("step", 0)))
        return loss, step

    def _budgets(self) -> GaugeMetricFamily:
        budget = GaugeMetricFamily(
            "openft_project_budget_usd", "Monthly budget of each project that has one.",
            labels=["project"],
        )  # fmt: skip
        for project, amount in self.budgets.items():
            budget.add_metric([project], amount)
        return budget

    @staticmethod
    def _durations(session: Any) -> SummaryMetricFamily:
        duration = SummaryMetricFamily(
            "openft_job_duration_seconds", "Creation to finish of succeeded jobs.",
            labels=["base_model"],
        )  # fmt: skip
        for base, count, total in session.execute(
            select(
                FineTuningJob.model,
                func.count(),
                func.sum(FineTuningJob.finished_at - FineTuningJob.created_at),
            )
            .where(FineTuningJob.status == "succeeded")
            .group_by(FineTuningJob.model)
        ):
            duration.add_metric([base], count_value=count, sum_value=float(total or 0))
        return duration

    @staticmethod
    def _drift_references(session: Any) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        """Each servable model's training profile: what live prompts are compared with."""
        reference = GaugeMetricFamily(
            "openft_drift_reference_share",
            "Share of each prompt-length bin in a fine-tuned model's training data.",
            labels=["model", "bin"],
        )
        token_reference = GaugeMetricFamily(
            "openft_drift_token_reference_share",
            "Share of each token-sketch bin in a fine-tuned model's training prompts.",
            labels=["model", "bin"],
        )
        for model, profile in _profiles(session):
            for index, share in enumerate(profile.shares):
                reference.add_metric([model, str(index)], share)
            for index, share in enumerate(profile.tokens.shares if profile.tokens else ()):
                token_reference.add_metric([model, str(index)], share)
        return reference, token_reference

    @staticmethod
    def _forgetting(session: Any) -> tuple[GaugeMetricFamily, ...]:
        """Per (base model, project), not per job: the series stay as few as the pairs. The
        threshold the job was checked against comes with it, labelled with the measure it
        applies to, so an alert needs no copy of it."""
        family = GaugeMetricFamily(
            "openft_job_forgetting_relative_increase",
            "Reference-set loss rise (fine-tuned vs base, as a share) of the newest succeeded job "
            "per base model and project that ran the forgetting check.",
            labels=["base_model", "project"],
        )
        answers = GaugeMetricFamily(
            "openft_job_forgetting_answers_lost",
            "Share of the reference questions its base model answers right that the same job's "
            "model gets wrong.",
            labels=["base_model", "project"],
        )
        threshold = GaugeMetricFamily(
            "openft_job_forgetting_threshold",
            "The base model's threshold that job was checked against, for its measure: loss "
            "(forgetting_warn_relative_increase) or answers (forgetting_warn_answers_lost).",
            labels=["base_model", "project", "measure"],
        )
        newest = (
            select(func.max(FineTuningJob.seq))
            .where(FineTuningJob.status == "succeeded", FineTuningJob.openft.is_not(None))
            .group_by(FineTuningJob.model, FineTuningJob.project_id)
        )
        rows = session.execute(
            select(FineTuningJob.model, Project.slug, FineTuningJob.openft)
            .join(Project, Project.id == FineTuningJob.project_id)
            .where(FineTuningJob.seq.in_(newest))
        )
        for base, slug, findings in rows:
            check = (findings or {}).get("forgetting")
            if check:
                family.add_metric([base, slug], float(check["relative_increase"]))
                if check.get("answers_lost") is not None:
                    answers.add_metric([base, slug], float(check["answers_lost"]))
                measure = check.get("measure", "loss")
                threshold.add_metric([base, slug, measure], float(check["threshold"]))
        return family, answers, threshold

    @staticmethod
    def _latest_metrics(session: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
        newest = (
            select(func.max(FineTuningJobEvent.seq))
            .join(FineTuningJob, FineTuningJob.id == FineTuningJobEvent.job_id)
            .where(FineTuningJob.status == "running", FineTuningJobEvent.type == "metrics")
            .group_by(FineTuningJobEvent.job_id)
        )
        rows = session.execute(
            select(FineTuningJob.id, FineTuningJob.model, Project.slug, FineTuningJobEvent.data)
            .join(FineTuningJobEvent, FineTuningJobEvent.job_id == FineTuningJob.id)
            .join(Project, Project.id == FineTuningJob.project_id)
            .where(FineTuningJobEvent.seq.in_(newest))
        )
        return [(r[0], r[1], r[2], r[3] or {}) for r in rows]


class AdaptersCollector(Collector):
    """Adapters loaded into each base model's vLLM: what the engine's watcher last saw in vLLM's
    own list (a scrape never waits for vLLM)."""

    def __init__(self, servers: Callable[[], dict[str, ServerStatus]]) -> None:
        self.servers = servers

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "openft_loaded_adapters", "Fine-tuned adapters loaded in vLLM.", labels=["base_model"]
        )
        for base_model, server in self.servers().items():
            if server.adapters is not None:
                family.add_metric([base_model], server.adapters)
        yield family


def _profiles(session: Any) -> list[tuple[str, PromptProfile]]:
    """Every servable fine-tuned model and checkpoint with its training prompt profile."""
    jobs = session.execute(
        select(
            FineTuningJob.id, FineTuningJob.fine_tuned_model, FineTuningJob.prompt_profile
        ).where(
            FineTuningJob.status == "succeeded",
            FineTuningJob.model_deleted_at.is_(None),
            FineTuningJob.prompt_profile.is_not(None),
        )
    ).all()
    found = {row[1]: PromptProfile.from_dict(row[2]) for row in jobs if row[1]}
    by_job = {row[0]: PromptProfile.from_dict(row[2]) for row in jobs}
    if by_job:
        for name, job_id in session.execute(
            select(FineTuningJobCheckpoint.name, FineTuningJobCheckpoint.job_id).where(
                FineTuningJobCheckpoint.job_id.in_(list(by_job))
            )
        ):
            found.setdefault(name, by_job[job_id])
    return sorted(found.items())
