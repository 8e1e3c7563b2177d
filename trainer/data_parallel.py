"""Data-parallel collectives: a rank's group (NCCL, or gloo on CPUs), joining and leaving it.

A step's examples are dealt out round-robin; each rank's gradient (of its share's mean loss) is
weighted by its share of the step's weight (loss tokens, or pairs for DPO) and the weighted
gradients are summed, which is exactly the gradient of the whole step's mean loss. Every rank then
takes the same optimizer step, so the adapters stay identical without being sent around. The
processes themselves are started by ``trainer.followers``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

# Every rank joins before it loads anything: a follower that has not come by then never will.
JOIN_TIMEOUT = timedelta(minutes=5)
# A step's collectives wait while the leader validates, snapshots and reports between steps.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the job's training processes."""

    rank: int
    size: int
    # The process group the training collectives use (with COLLECTIVE_TIMEOUT); None: the default.
    handle: Any = field(default=None, compare=False)

    def share(self, batch: Sequence[T]) -> list[T]:
        """This rank's examples of a step."""
        return list(batch[self.rank :: self.size])

    def same_start(self, parameters: Sequence[torch.Tensor]) -> None:
        """Every rank starts from the leader's adapter weights."""
        for parameter in parameters:
            dist.broadcast(parameter.data, src=0, group=self.handle)

    def combine(
        self, parameters: Sequence[torch.Tensor], loss: float, accuracy: float, weight: float
    ) -> tuple[float, float]:
        """Turn each rank's gradient of its share into the whole step's; the step's loss and
        accuracy. ``weight``: what this rank's mean was taken over."""
        device = parameters[0].device
        totals = torch.tensor(
            [weight, loss * weight, accuracy * weight], dtype=torch.float64, device=device
        )
        dist.all_reduce(totals, group=self.handle)
        step_weight = float(totals[0])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat *= weight / step_weight if step_weight else 0.0
        dist.all_reduce(flat, group=self.handle)
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            parameter.grad = grad
            offset += grad.numel()
        if not step_weight:
            return 0.0, 0.0
        return float(totals[1]) / step_weight, float(totals[2]) / step_weight

    def agree(self, reason: str | None) -> str | None:
        """The leader's answer to "stop now?", on every rank."""
        box = [reason]
        dist.broadcast_object_list(box, src=0, group=self.handle)
        return box[0]


def join(rank: int, size: int, rendezvous: Path) -> Group:
    """Join the job's process group (the leader's scratch folder holds the rendezvous file)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(rank)
        backend = "nccl"
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
        backend = "gloo"
    dist.init_process_group(
        backend,
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=size,
        timeout=JOIN_TIMEOUT,
    )
    return Group(rank, size, dist.new_group(list(range(size)), timeout=COLLECTIVE_TIMEOUT))


def leave() -> None:
    """Leave the job's group. After a join that failed, reset the count torch names groups by
    (a failed join took a number and nothing gives it back), or the process's next job would
    wait for its followers under another group name than theirs, until JOIN_TIMEOUT."""
    if dist.is_initialized():
        dist.destroy_process_group()
    else:
        dist.distributed_c10d._world.group_count = 0
