"""One optimizer step's examples as forward passes that spend compute on real tokens only.

OpenAI's step is ``batch_size`` examples. Padding them all to the longest wastes most of the
compute when lengths spread (a 1,000-token chat next to 20-token ones), and packing them into one
long row makes attention quadratic in the row. So the step's examples are sorted by length and cut
into groups of similar length whose padded size fits a token budget; each group is one forward and
backward pass, and the loss of every group is divided by the loss tokens of the whole step, so the
accumulated gradient is exactly that of the step's mean loss over all its loss tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from trainer.chat_masks import IGNORE_INDEX, TokenizedExample

MIN_FILL = 0.75  # an example fills at least this share of its group's padded width


@dataclass(frozen=True)
class StepTotals:
    loss_sum: float  # summed over the step's loss tokens
    loss_tokens: int
    correct_tokens: int
    padded_tokens: int  # what the forward passes computed, padding included

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.loss_tokens)

    @property
    def accuracy(self) -> float:
        return self.correct_tokens / max(1, self.loss_tokens)


def length_groups(
    batch: list[TokenizedExample], tokens_per_forward: int, min_fill: float = MIN_FILL
) -> list[list[TokenizedExample]]:
    """Examples sorted longest first, cut into groups of similar length within the budget.

    An example joins the current group only if the padded group still fits the budget and the
    example fills at least ``min_fill`` of the group's width, so padding stays a small share.
    """
    groups: list[list[TokenizedExample]] = []
    for example in sorted(batch, key=lambda e: len(e.input_ids), reverse=True):
        group = groups[-1] if groups else None
        # Sorted longest first, so a group's padded width is its first example's length.
        width = len(group[0].input_ids) if group else 0
        if (
            group is not None
            and (len(group) + 1) * width <= tokens_per_forward
            and len(example.input_ids) >= min_fill * width
        ):
            group.append(example)
        else:
            groups.append([example])
    return groups


def loss_tokens(example: TokenizedExample) -> int:
    """Targets that take loss: labels shifted by one, as the model predicts the next token."""
    return sum(label != IGNORE_INDEX for label in example.labels[1:])


def evaluate(
    model: torch.nn.Module, examples: list[TokenizedExample], tokens_per_forward: int
) -> StepTotals:
    """Loss and token accuracy over ``examples`` (validation): forward passes only."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return accumulate_gradients(model, examples, tokens_per_forward, backward=False)
    finally:
        model.train(was_training)


def accumulate_gradients(
    model: torch.nn.Module,
    batch: list[TokenizedExample],
    tokens_per_forward: int,
    *,
    backward: bool = True,
) -> StepTotals:
    """Forward and backward over ``batch`` in length groups; gradients of the step's mean loss.

    On a GPU a pass costs its kernel launches more than its padding, so a step's examples share
    as few passes as the budget allows; on a CPU padding is compute, so groups keep similar
    lengths (``MIN_FILL``)."""
    device = next(model.parameters()).device
    min_fill = 0.0 if device.type == "cuda" else MIN_FILL
    total_loss_tokens = sum(loss_tokens(e) for e in batch)
    loss_sum = 0.0
    correct = padded = 0
    selects_positions = keeps_logits(model)
    for group in length_groups(batch, tokens_per_forward, min_fill):
        input_ids, labels, attention = pad(group)
        input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
        padded += input_ids.numel()
        logits, targets = trained_logits(model, input_ids, labels, attention, selects_positions)
        group_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        if total_loss_tokens and backward:
            (group_loss / total_loss_tokens).backward()
        loss_sum += float(group_loss.item())
        trained = targets != IGNORE_INDEX
        correct += int(((logits.argmax(-1) == targets) & trained).sum().item())
    return StepTotals(loss_sum, total_loss_tokens, correct, padded)


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model (under its adapter) computes logits at chosen positions only
    (transformers' ``logits_to_keep``, as a tensor of positions). On a prompt of 40 tokens
    and an answer of 12, the projection onto a 49k vocabulary and its loss are then done on 12
    positions instead of 52; the loss and gradients are the same."""
    get_base_model = getattr(model, "get_base_model", None)
    inner = get_base_model() if callable(get_base_model) else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def trained_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention: torch.Tensor,
    selects_positions: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and their targets (labels shifted by one: position i predicts token i + 1);
    with ``selects_positions`` (``keeps_logits``), the vocabulary projection runs only where
    some row's next token trains."""
    targets = labels[:, 1:]
    if not selects_positions:
        return model(input_ids=input_ids, attention_mask=attention).logits[:, :-1], targets
    positions = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions).logits
    return logits, targets[:, positions]


def pad(group: list[TokenizedExample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a group to its longest example."""
    width = max(len(e.input_ids) for e in group)
    ids = torch.zeros((len(group), width), dtype=torch.long)
    labels = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(group), width), dtype=torch.long)
    for row, example in enumerate(group):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return ids, labels, attention
