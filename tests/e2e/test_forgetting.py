"""The forgetting check on real jobs: an aggressive fine-tune loses more of the demo model's
general reference set than a gentle one on the same data and seed, and is warned.

Runs on the training server of ``test_fine_tune_end_to_end.py`` (the same session fixtures). Each
job has its own project, so the per-(base model, project) metric shows each job's figure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from service.auth.service import AccessService
from service.db.database import Database
from tests.e2e.test_fine_tune_end_to_end import TERMINAL, fact_lines, samples, scrape, wait_for
from tests.support.server import ServerProcess

METRIC = "openft_job_forgetting_relative_increase"
OPENING = "Forgetting check on the 24-example reference set: loss "
WARNING = "The reference-set loss rose by "
# Aggressive by many steps at a moderate rate: the random model's reference loss then rises ~0.70%
# whatever the rounding (peft's LoRA layers and trainer.fused_lora's agree to 4 digits). At very
# high rates (10 epochs at 30, or 20 at 10) Adam's first, sign-like steps amplify rounding noise and
# the rise landed anywhere in 0.47-0.97% with the layers or the CPU. The gentle job rises ~0%.
GENTLE = {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 0.01}
AGGRESSIVE = {"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 3.0}
THRESHOLD = 0.005  # the demo model's (see Settings.demo_model)
SEED = 11


def submit(client: openai.OpenAI, hyperparameters: dict[str, Any]) -> str:
    training = client.files.create(file=("fact.jsonl", fact_lines()), purpose="fine-tune")
    method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training.id,
        seed=SEED,
        method=method,  # type: ignore[arg-type]
    )
    return job.id


def forgetting(job: FineTuningJob) -> dict[str, Any]:
    """The job's ``openft.forgetting`` field (the SDK keeps fields it does not know as extras)."""
    extension = (job.model_extra or {}).get("openft")
    assert extension is not None, job
    found: dict[str, Any] = extension["forgetting"]
    return found


def messages(client: openai.OpenAI, job_id: str, level: str) -> list[str]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)
    return [e.message for e in events if e.level == level and e.type == "message"]


def test_an_aggressive_job_forgets_more_than_a_gentle_one_and_is_warned(
    sdk: Callable[..., openai.OpenAI], training_server: ServerProcess
) -> None:
    database = Database(f"sqlite:///{Path(training_server.env['OPENFT_DATA_DIR']) / 'openft.db'}")
    access = AccessService(database)
    gentle_client = sdk(training_server.api_url, access.issue_key("forgetting-gentle").key)
    harsh_client = sdk(training_server.api_url, access.issue_key("forgetting-aggressive").key)
    database.dispose()
    gentle_id = submit(gentle_client, GENTLE)
    harsh_id = submit(harsh_client, AGGRESSIVE)

    gentle = wait_for(gentle_client, gentle_id, TERMINAL)
    harsh = wait_for(harsh_client, harsh_id, TERMINAL)

    assert gentle.status == "succeeded" and harsh.status == "succeeded", (gentle, harsh)
    soft, hard = forgetting(gentle), forgetting(harsh)
    for check in (soft, hard):
        assert check["reference_examples"] == 24 and check["threshold"] == THRESHOLD
        assert check["base_loss"] > 0
        rise = (check["fine_tuned_loss"] - check["base_loss"]) / check["base_loss"]
        assert check["relative_increase"] == pytest.approx(rise)
    assert soft["base_loss"] == pytest.approx(hard["base_loss"])  # the same base, measured alike
    assert hard["relative_increase"] > soft["relative_increase"]
    assert hard["relative_increase"] > THRESHOLD and hard["warning"] is True
    assert soft["relative_increase"] <= THRESHOLD and soft["warning"] is False

    (soft_info,) = [m for m in messages(gentle_client, gentle_id, "info") if OPENING in m]
    (hard_info,) = [m for m in messages(harsh_client, harsh_id, "info") if OPENING in m]
    assert soft_info.endswith(f"({soft['relative_increase']:+.1%}) under the fine-tuned model")
    assert hard_info.endswith(f"({hard['relative_increase']:+.1%}) under the fine-tuned model")
    assert [m for m in messages(gentle_client, gentle_id, "warn") if WARNING in m] == []
    (warned,) = [m for m in messages(harsh_client, harsh_id, "warn") if m.startswith(WARNING)]
    assert "consider a lower learning_rate_multiplier or fewer epochs" in warned

    text = scrape(training_server).text
    for project, check in (("forgetting-gentle", soft), ("forgetting-aggressive", hard)):
        labels = {"base_model": "tiny-chat", "project": project}
        assert samples(text, METRIC, **labels) == pytest.approx(check["relative_increase"])
