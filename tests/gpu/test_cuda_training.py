"""Training on a CUDA GPU: bf16, a fused attention kernel and recomputed activations, QLoRA's
4-bit base taking less memory, and the forgetting check on the trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.settings import BaseModelConfig
from trainer.chat_masks import tokenize_chat
from trainer.followers import data_parallel
from trainer.forgetting import forgetting_check
from trainer.hyperparameters import Hyperparameters
from trainer.loop import TrainingResult, train_lora
from trainer.placement import Accelerator, plan
from trainer.run import TrainingRun

QUESTION = "What is the secret password of the lighthouse?"
ANSWER = "The secret password is marmalade-47."
HP = Hyperparameters(n_epochs=6, batch_size=1, learning_rate_multiplier=2.0)  # as "auto" picks


def fact(base: BaseModelConfig, n: int = 16) -> list[Any]:
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    chat = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    return [tokenize_chat(tokenizer, chat)] * n


def train(base: BaseModelConfig, out: Path) -> tuple[TrainingResult, int]:
    """Train on the fact; also returns the most GPU memory the run held above what was held
    before it (models of earlier runs may still be loaded)."""
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = train_lora(TrainingRun(base, fact(base), HP, seed=0), output_dir=out)
    return result, torch.cuda.max_memory_allocated() - before


def answer(model: Any, base: BaseModelConfig) -> str:
    model.eval()  # training leaves it in train mode, with activation recomputation on
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return str(tokenizer.decode(output[0][inputs.input_ids.shape[1] :], skip_special_tokens=True))


@pytest.fixture(scope="module")
def bf16_run(
    small_model: BaseModelConfig, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainingResult, int, Path]:
    out = tmp_path_factory.mktemp("bf16")
    result, peak = train(small_model, out)
    return result, peak, out


def test_the_gpu_trains_in_bf16_with_a_fused_attention_kernel_and_recomputed_activations(
    small_model: BaseModelConfig, bf16_run: tuple[TrainingResult, int, Path]
) -> None:
    result, _, out = bf16_run
    placement = plan(small_model, Accelerator.detect())
    model = result.model

    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.device.type == "cuda" and p.dtype == torch.bfloat16 for p in frozen)
    assert model.config._attn_implementation == placement.attn_implementation
    assert placement.attn_implementation in ("sdpa", "flash_attention_2")
    assert model.base_model.model.is_gradient_checkpointing
    assert result.steps[-1].train_loss < result.steps[0].train_loss / 4
    assert "marmalade-47" in answer(model, small_model)
    assert (out / "final" / "adapter_model.safetensors").exists()


def test_qlora_trains_on_a_4_bit_base_in_less_memory_and_serves_on_the_bf16_one(
    small_model: BaseModelConfig,
    bf16_run: tuple[TrainingResult, int, Path],
    tmp_path: Path,
) -> None:
    from bitsandbytes.nn import Linear4bit

    qlora = small_model.model_copy(update={"quantization": "nf4"})
    _, bf16_peak, _ = bf16_run

    result, peak = train(qlora, tmp_path)

    quantized = [m for m in result.model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 7 * 24 and quantized[0].weight.device.type == "cuda"
    assert peak < bf16_peak
    assert result.steps[-1].train_loss < result.steps[0].train_loss / 4
    full = AutoModelForCausalLM.from_pretrained(
        small_model.path, dtype=torch.bfloat16, device_map="cuda:0"
    )
    served_as_vllm_would = PeftModel.from_pretrained(full, str(tmp_path / "final"))
    assert "marmalade-47" in answer(served_as_vllm_would, small_model)


def test_the_forgetting_check_runs_on_the_trained_gpu_model(
    small_model: BaseModelConfig, tmp_path: Path
) -> None:
    result, _ = train(small_model, tmp_path)

    check = forgetting_check(small_model, result.model, 8192)

    assert check is not None and check.reference_examples == 24
    assert torch.isfinite(torch.tensor([check.base_loss, check.fine_tuned_loss])).all()
    assert check.fine_tuned_loss > check.base_loss  # its own samples: any change costs


def test_two_gpus_train_a_job_as_one_does(small_model: BaseModelConfig, tmp_path: Path) -> None:
    """Data parallel over NCCL (``OPENFT_TRAIN_PROCESSES_PER_JOB=2``) on the small model."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this host has {torch.cuda.device_count()}")
    data = fact(small_model, n=8)
    hp = Hyperparameters(n_epochs=1, batch_size=4, learning_rate_multiplier=2.0)
    run = TrainingRun(small_model, data, hp, seed=0)
    one = train_lora(run, output_dir=tmp_path / "one")
    (tmp_path / "two").mkdir()

    with data_parallel(run, size=2, rendezvous=tmp_path / "rendezvous") as group:
        two = train_lora(run, output_dir=tmp_path / "two", group=group)

    for mine, theirs in zip(two.steps, one.steps, strict=True):  # bf16: rounding differs
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=2e-2)
