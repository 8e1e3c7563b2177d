"""Data-parallel training of one job over several processes: one per GPU (NCCL), or gloo on CPUs.

The worker is rank 0: it claims the job, checks its files and alone talks to the database and the
blob store. It starts ranks 1..N-1 (``start_followers``), which load the same model and train on
their share of every step, writing nothing. A step's examples are dealt out round-robin; each
rank's gradient (of its share's mean loss) is weighted by its share of the step's weight (loss
tokens, or pairs for DPO) and the weighted gradients are summed, which is exactly the gradient of
the whole step's mean loss. Every rank then takes the same optimizer step, so the adapters stay
identical without being sent around.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessContext, start_processes

if TYPE_CHECKING:
    from service.settings import BaseModelConfig
    from trainer.dataset import TrainingExample
    from trainer.hyperparameters import Hyperparameters

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
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class FollowerJob:
    """What ranks 1..N-1 need to train along (sent to them pickled)."""

    base: BaseModelConfig
    examples: list[TrainingExample]
    hp: Hyperparameters
    seed: int
    tokens_per_forward: int
    resume_from: Path | None
    start_from: Path | None
    dpo_beta: float | None  # None: supervised
    rendezvous: Path
    size: int


def start_followers(job: FollowerJob) -> ProcessContext:
    """Ranks 1..N-1, in fresh processes; the caller then joins as rank 0."""
    followers: ProcessContext = start_processes(
        _follow, args=(job,), nprocs=job.size - 1, join=False, start_method="spawn"
    )
    return followers


def stop_followers(followers: ProcessContext, timeout_s: float = 60) -> None:
    """Wait for the followers to finish (they end with the leader's last step or stop); end
    any that do not."""
    for process in followers.processes:
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def data_parallel(job: FollowerJob | None) -> Iterator[Group | None]:
    """The leader's side of a job: start the followers, join as rank 0, and on the way out (the
    job trained, stopped or failed) leave and wait for them. Without a job: no group."""
    if job is None:
        yield None
        return
    followers = start_followers(job)
    try:
        yield join(0, job.size, job.rendezvous)
    finally:
        leave()
        stop_followers(followers)


def _follow(index: int, job: FollowerJob) -> None:
    from service.supervisor import die_with_parent
    from trainer.objectives import PreferenceObjective
    from trainer.sft import TrainingStopped, train_lora

    die_with_parent()  # a leader killed mid-step must not leave its followers waiting
    group = join(index + 1, job.size, job.rendezvous)
    objective = PreferenceObjective(job.dpo_beta) if job.dpo_beta is not None else None
    try:
        with tempfile.TemporaryDirectory(prefix="openft-follower-") as scratch:
            train_lora(
                job.base,
                job.examples,
                job.hp,
                seed=job.seed,
                output_dir=Path(scratch),
                resume_from=job.resume_from,
                tokens_per_forward=job.tokens_per_forward,
                start_from=job.start_from,
                objective=objective,
                group=group,
            )
    except TrainingStopped:
        pass  # the leader stopped the job; it says why
    finally:
        leave()
