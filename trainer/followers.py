"""The other training processes of a data-parallel job: starting, following and stopping them.

The worker is rank 0: it claims the job, checks its files and alone talks to the database and the
blob store. It starts ranks 1..N-1 (``start_followers``), which load the same model and train the
same run on their share of every step (``trainer.data_parallel``), writing nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torch.multiprocessing.spawn import ProcessContext, start_processes

from service.supervisor import die_with_parent
from trainer.data_parallel import Group, join, leave
from trainer.loop import TrainingStopped, train_lora
from trainer.run import TrainingRun


def start_followers(run: TrainingRun, *, size: int, rendezvous: Path) -> ProcessContext:
    """Ranks 1..size-1, in fresh processes (sent the run pickled); the caller then joins as
    rank 0. Only the leader measures validation examples, so the followers are not sent them."""
    follower_run = dataclasses.replace(run, validation=None)
    followers: ProcessContext = start_processes(
        _follow,
        args=(follower_run, size, rendezvous),
        nprocs=size - 1,
        join=False,
        start_method="spawn",
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
def data_parallel(run: TrainingRun, *, size: int, rendezvous: Path) -> Iterator[Group | None]:
    """The leader's side of a job of ``size`` processes: start the followers, join as rank 0,
    and on the way out (the job trained, stopped or failed) leave and wait for them. With one
    process: no group."""
    if size == 1:
        yield None
        return
    followers = start_followers(run, size=size, rendezvous=rendezvous)
    try:
        yield join(0, size, rendezvous)
    finally:
        leave()
        stop_followers(followers)


def _follow(index: int, run: TrainingRun, size: int, rendezvous: Path) -> None:
    die_with_parent()  # a leader killed mid-step must not leave its followers waiting
    group = join(index + 1, size, rendezvous)
    try:
        with tempfile.TemporaryDirectory(prefix="openft-follower-") as scratch:
            train_lora(run, output_dir=Path(scratch), group=group)
    except TrainingStopped:
        pass  # the leader stopped the job; it says why
    finally:
        leave()
