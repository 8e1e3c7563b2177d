"""Length-grouped batches: the same loss and gradients as the step computed example by example."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from service.settings import BaseModelConfig
from trainer.batching import accumulate_gradients, length_groups, loss_tokens, pad
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample
from trainer.dataset import PreferencePair
from trainer.hyperparameters import Hyperparameters
from trainer.loop import train_lora
from trainer.objectives import answer_logps
from trainer.run import TrainingRun

VOCAB = 96


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config)


def examples(lengths: list[int], seed: int = 1) -> list[TokenizedExample]:
    rng = random.Random(seed)
    found = []
    for n in lengths:
        ids = [rng.randrange(1, VOCAB) for _ in range(n)]
        prompt = rng.randrange(1, n)
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]  # the tail is the assistant's turn
        found.append(TokenizedExample(ids, labels, n - prompt, n))
    return found


def len_of(example: TokenizedExample) -> int:
    return len(example.input_ids)


def padded_step_gradients(
    model: torch.nn.Module, batch: list[TokenizedExample]
) -> tuple[float, dict[str, torch.Tensor]]:
    """The reference: one forward over the whole step padded to its longest example."""
    model.zero_grad(set_to_none=True)
    input_ids, labels, attention = pad(batch)
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    loss.backward()
    return float(loss), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def test_groups_are_sorted_and_fit_the_budget() -> None:
    batch = examples([5, 40, 7, 38, 6, 90])

    groups = length_groups(batch, tokens_per_forward=80, min_fill=0.75)

    # 90 alone (budget); 40 and 38 fill the budget; 5 is under 3/4 of 7's width.
    assert [[len(e.input_ids) for e in g] for g in groups] == [[90], [40, 38], [7, 6], [5]]
    assert all(len(g) * len(g[0].input_ids) <= 80 or len(g) == 1 for g in groups)
    assert length_groups(batch, 10_000, min_fill=0.0) == [sorted(batch, key=len_of, reverse=True)]


@pytest.mark.parametrize("budget", [1, 60, 100_000])
def test_grouped_batches_give_the_loss_and_gradients_of_the_padded_step(budget: int) -> None:
    model = tiny_llama()
    batch = examples([9, 120, 14, 33, 200, 17, 8, 61])
    expected_loss, expected_grads = padded_step_gradients(model, batch)

    model.zero_grad(set_to_none=True)
    totals = accumulate_gradients(model, batch, tokens_per_forward=budget)

    assert totals.loss == pytest.approx(expected_loss, abs=1e-5)
    assert totals.loss_tokens == sum(loss_tokens(e) for e in batch)
    for name, param in model.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(param.grad, expected_grads[name], atol=1e-5, rtol=1e-4)
    if budget < 100_000:
        assert totals.padded_tokens < len(batch) * 200  # fewer tokens than padding them all


def test_the_vocabulary_projection_runs_only_where_a_next_token_trains() -> None:
    model = tiny_llama()
    batch = examples([30, 31, 29])
    rows: list[int] = []
    model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))

    accumulate_gradients(model, batch, tokens_per_forward=100_000)

    trained = {i - 1 for e in batch for i, label in enumerate(e.labels) if label != IGNORE_INDEX}
    assert rows == [len(trained - {-1})] and rows[0] < 30


def test_the_same_seed_and_data_give_the_same_adapter(tmp_path: Path) -> None:
    model_dir = tmp_path / "base"
    tiny_llama().save_pretrained(model_dir)
    base = BaseModelConfig(name="tiny-llama", path=str(model_dir), lora_rank=4, lora_alpha=8)
    data = examples([12, 30, 7, 44, 19, 25], seed=3)
    hp = Hyperparameters(n_epochs=2, batch_size=3, learning_rate_multiplier=1.0)

    def adapter(run: str, seed: int) -> dict[str, torch.Tensor]:
        out = tmp_path / run
        train_lora(TrainingRun(base, data, hp, seed=seed), output_dir=out)
        return load_file(out / "final" / "adapter_model.safetensors")

    first, second, other_seed = adapter("a", 5), adapter("b", 5), adapter("c", 6)

    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(first[name], other_seed[name]) for name in first)


def test_a_preference_pair_projects_onto_the_vocabulary_only_where_an_answer_token_is_next() -> (
    None
):
    """DPO's answer log-probs with logits at the answers' positions only: the same sums and
    gradients as over every position."""
    model = tiny_llama()
    prompt = [5, 9, 14, 2, 33, 7, 21]
    end = 3  # the template's token after the answer, which takes no loss

    def chat(answer: list[int]) -> TokenizedExample:
        ids = prompt + answer + [end]
        labels = [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX]
        return TokenizedExample(ids, labels, len(answer), len(ids))

    pair = PreferencePair(chat([40, 41, 42, 43, 44]), chat([40, 50, 51]))
    rows: list[int] = []
    model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))

    def summed(logps: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        logps.sum().backward()
        return logps.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }  # type: ignore[union-attr]

    got = summed(answer_logps(model, pair))
    input_ids, labels, attention = pad([pair.chosen, pair.rejected])
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
    targets = labels[:, 1:]
    every = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    expected = summed((every.squeeze(-1) * (targets != IGNORE_INDEX)).sum(-1))

    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    assert got[1].keys() == expected[1].keys()
    for name, grad in got[1].items():
        torch.testing.assert_close(grad, expected[1][name], rtol=1e-4, atol=1e-6)
    assert rows == [5, len(pair.chosen.input_ids)]  # the longer answer's 5 positions, then all
