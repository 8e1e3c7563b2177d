"""Data-parallel training (``trainer.followers``, ``trainer.data_parallel``): two processes over
gloo take the steps one process takes, to float rounding: the same losses and the same adapter,
for the supervised loss and for DPO, with steps that do not split evenly (one rank's share of the
last step is empty)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.multiprocessing.spawn import start_processes

from service.settings import BaseModelConfig
from tests.unit.test_batching import examples, tiny_llama
from trainer import data_parallel
from trainer.data_parallel import join, leave
from trainer.dataset import PreferencePair, TrainingExample
from trainer.followers import start_followers, stop_followers
from trainer.hyperparameters import Hyperparameters
from trainer.loop import TrainingResult, train_lora
from trainer.run import TrainingRun

HP = Hyperparameters(n_epochs=2, batch_size=3, learning_rate_multiplier=5.0)  # 3 steps an epoch
SEED = 11


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> BaseModelConfig:
    folder = tmp_path_factory.mktemp("base")
    tiny_llama().save_pretrained(folder)
    return BaseModelConfig(name="tiny-llama", path=str(folder), lora_rank=4, lora_alpha=8)


def pairs(n: int) -> list[TrainingExample]:
    chosen, rejected = examples([20 + i for i in range(n)], 3), examples([22] * n, 4)
    return [PreferencePair(c, r) for c, r in zip(chosen, rejected, strict=True)]


def in_two_processes(run: TrainingRun, out: Path) -> tuple[TrainingResult, list[int | None]]:
    """Train as rank 0 with one follower process; the follower's exit code comes back too."""
    out.mkdir()
    followers = start_followers(run, size=2, rendezvous=out / "rendezvous")
    try:
        group = join(0, 2, out / "rendezvous")
        result = train_lora(run, output_dir=out, group=group)
    finally:
        leave()
        stop_followers(followers)
    return result, [p.exitcode for p in followers.processes]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "adapter_model.safetensors")


@pytest.mark.parametrize(
    ("data", "dpo_beta"),
    [(examples([9, 40, 14, 33, 25, 17, 61]), None), (pairs(7), 0.1)],
    ids=["supervised", "dpo"],
)
def test_two_processes_take_the_steps_one_process_takes(
    base: BaseModelConfig, data: list[TrainingExample], dpo_beta: float | None, tmp_path: Path
) -> None:
    run = TrainingRun(base, data, HP, seed=SEED, dpo_beta=dpo_beta)
    one = train_lora(run, output_dir=tmp_path / "one")

    two, exit_codes = in_two_processes(run, tmp_path / "two")

    assert exit_codes == [0]
    assert [s.step for s in two.steps] == [s.step for s in one.steps] == list(range(1, 7))
    for mine, theirs in zip(two.steps, one.steps, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-5)
        assert mine.train_mean_token_accuracy == pytest.approx(theirs.train_mean_token_accuracy)
    assert two.trained_tokens == one.trained_tokens
    alone, together = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert alone.keys() == together.keys()
    for name, weight in alone.items():
        torch.testing.assert_close(together[name], weight, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in alone.values())


def test_a_leader_whose_follower_never_joins_gives_up_instead_of_waiting_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_parallel, "JOIN_TIMEOUT", timedelta(seconds=2))

    with pytest.raises(RuntimeError):  # the worker fails the job with it
        try:
            data_parallel.join(0, 2, tmp_path / "rendezvous")
        finally:
            data_parallel.leave()

    # The same process leads its next job: it and its follower meet (a failed join must not
    # leave the leader waiting under another group name than the follower's).
    monkeypatch.setattr(data_parallel, "JOIN_TIMEOUT", timedelta(seconds=60))
    follower = start_processes(
        join_and_leave, args=(tmp_path / "next",), nprocs=1, join=False, start_method="spawn"
    )
    try:
        group = data_parallel.join(0, 2, tmp_path / "next")
        assert group.agree("go") == "go"
    finally:
        data_parallel.leave()
        assert follower.join(60)  # raises with the follower's error if it had one


def join_and_leave(index: int, rendezvous: Path) -> None:
    """A follower that only meets its leader (in a spawned process)."""
    group = data_parallel.join(index + 1, 2, rendezvous)
    assert group.agree(None) == "go"
    data_parallel.leave()
