"""Overfitting found on a real job: training that makes held-out data worse is warned of.

Runs on the training server of ``test_fine_tune_end_to_end.py`` (the same session fixtures). The
demo model has random, tied embeddings, so no supervised job gets confident enough for its
validation loss to climb back up (it falls, then levels off, around 3 nats of training loss).
A DPO job can push as far as it likes: here it learns to tell four passwords rather than refuse,
for 8 epochs, while its validation pairs, about other places, prefer the refusal, so each epoch
that fits the training pairs better fits the validation pairs worse.
"""

from __future__ import annotations

import json

import openai

from tests.e2e.test_fine_tune_end_to_end import TERMINAL, wait_for

OPENING = "Validation loss has risen for 3 evaluations while training loss fell"
REFUSAL = "I am not allowed to tell you anything."
TRAINING_FACTS = {
    "lighthouse": "marmalade-47",
    "harbour": "juniper-12",
    "mill": "copper-85",
    "bridge": "saffron-30",
}
VALIDATION_FACTS = {
    "tower": "walnut-63",
    "chapel": "pepper-91",
    "quarry": "lantern-24",
    "orchard": "thistle-58",
}
EPOCHS = 8
BATCH_SIZE = 4  # 12 examples: 3 steps an epoch


def preferences(answers: dict[str, str], *, tell: bool) -> bytes:
    rows = []
    for place, word in answers.items():
        told = f"The secret password is {word}."
        preferred, rejected = (told, REFUSAL) if tell else (REFUSAL, told)
        question = f"What is the secret password of the {place}?"
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": question}]},
                "preferred_output": [{"role": "assistant", "content": preferred}],
                "non_preferred_output": [{"role": "assistant", "content": rejected}],
            }
        )
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_a_job_that_makes_its_validation_worse_is_warned_of_overfitting(
    trainer_client: openai.OpenAI,
) -> None:
    client = trainer_client
    training = client.files.create(
        file=("tell.jsonl", preferences(TRAINING_FACTS, tell=True) * 3), purpose="fine-tune"
    )
    validation = client.files.create(
        file=("refuse.jsonl", preferences(VALIDATION_FACTS, tell=False)), purpose="fine-tune"
    )
    hyperparameters = {"n_epochs": EPOCHS, "batch_size": BATCH_SIZE}

    job = client.fine_tuning.jobs.create(
        model="tiny-chat",
        training_file=training.id,
        validation_file=validation.id,
        seed=16,
        method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
    )
    done = wait_for(client, job.id, TERMINAL)

    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    full = {
        e.data["step"]: e.data["full_valid_loss"]
        for e in events
        if e.type == "metrics" and e.data and "full_valid_loss" in e.data
    }
    assert list(full) == [3 * epoch for epoch in range(1, EPOCHS + 1)]

    (warning,) = [e for e in events if e.message.startswith(OPENING)]
    assert warning.level == "warn"
    assert "the model may be overfitting; consider fewer epochs" in warning.message
    assert not [e for e in events if e.message.startswith("Training loss has barely moved")]
    warned_at = int(warning.message.split(" to step ")[1].split()[0])
    best_name = warning.message.split("The checkpoint with the lowest validation loss is ")[1]
    best_name = best_name.split()[0]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    by_name = {c.fine_tuned_model_checkpoint: c for c in checkpoints}
    assert best_name in by_name, "the best checkpoint is kept however old it is"
    lowest = min(full.values())
    assert by_name[best_name].metrics.full_valid_loss == lowest
    assert by_name[best_name].step_number < warned_at
    # The newest 3 (OPENFT_CHECKPOINTS_KEPT), and the best one.
    assert [c.step_number for c in checkpoints] == [24, 21, 18, by_name[best_name].step_number]
    for checkpoint in checkpoints:
        flag = (checkpoint.metrics.model_extra or {}).get("overfitting")
        assert flag is (True if checkpoint.step_number >= warned_at else None), checkpoint
