"""Supervised LoRA fine-tuning: a plain torch loop over peft, loss on assistant tokens only."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

from service.settings import BaseModelConfig
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample
from trainer.hyperparameters import Hyperparameters

MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class StepMetrics:
    step: int
    total_steps: int
    train_loss: float
    train_mean_token_accuracy: float


@dataclass(frozen=True)
class TrainingResult:
    steps: list[StepMetrics]
    trained_tokens: int


class TrainingStopped(Exception):
    """``should_stop`` said so (cancelled, lease lost, or shutting down)."""


def train_lora(
    base: BaseModelConfig,
    examples: list[TokenizedExample],
    hp: Hyperparameters,
    *,
    seed: int,
    output_dir: Path,
    on_step: Callable[[StepMetrics], None],
    should_stop: Callable[[], bool],
) -> TrainingResult:
    """Train a LoRA adapter on ``examples`` and save it (PEFT format) to ``output_dir``."""
    torch.manual_seed(seed)
    model = _lora_model(base)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=base.learning_rate * hp.learning_rate_multiplier)
    total = hp.total_steps(len(examples))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    order = random.Random(seed)
    steps: list[StepMetrics] = []
    trained_tokens = 0
    model.train()
    for _epoch in range(hp.n_epochs):
        indices = list(range(len(examples)))
        order.shuffle(indices)
        for start in range(0, len(indices), hp.batch_size):
            batch = [examples[i] for i in indices[start : start + hp.batch_size]]
            loss, accuracy = _step(model, batch, optimizer, scheduler, trainable)
            trained_tokens += sum(len(e.input_ids) for e in batch)
            steps.append(StepMetrics(len(steps) + 1, total, loss, accuracy))
            on_step(steps[-1])
            if should_stop():
                raise TrainingStopped
    model.save_pretrained(str(output_dir))
    return TrainingResult(steps, trained_tokens)


def _lora_model(base: BaseModelConfig) -> PeftModel:
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    config = LoraConfig(
        r=base.lora_rank,
        lora_alpha=base.lora_alpha,
        target_modules=list(base.lora_target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    assert isinstance(peft_model, PeftModel)
    return peft_model


def _step(
    model: torch.nn.Module,
    batch: list[TokenizedExample],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainable: list[torch.nn.Parameter],
) -> tuple[float, float]:
    input_ids, labels, attention = _pad(batch)
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    trained = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) & trained
    accuracy = correct.sum().item() / max(1, int(trained.sum().item()))
    return float(loss.item()), float(accuracy)


def _pad(batch: list[TokenizedExample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example (batching without waste comes with the speed work)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return ids, labels, attention
