"""How a base model is placed for training, for every kind of machine (``trainer.placement``)."""

from __future__ import annotations

import pytest
import torch

from service.settings import BaseModelConfig
from trainer.placement import Accelerator, plan

BASE = BaseModelConfig(name="m", path="/models/m")
ONE_H100 = Accelerator(cuda_devices=1, bf16=True, flash_attention=True)


def test_the_cpu_trains_in_float32_with_sdpa_and_keeps_activations() -> None:
    placement = plan(BASE, Accelerator())

    assert placement.device_map is None and placement.dtype == torch.float32
    assert placement.attn_implementation == "sdpa"
    assert not placement.gradient_checkpointing and placement.quantization is None
    assert placement.load_kwargs() == {"dtype": torch.float32, "attn_implementation": "sdpa"}


def test_one_modern_gpu_trains_in_bf16_with_flash_attention_and_recomputes_activations() -> None:
    placement = plan(BASE, ONE_H100)

    assert placement.device_map == "cuda:0" and placement.dtype == torch.bfloat16
    assert placement.attn_implementation == "flash_attention_2"
    assert placement.gradient_checkpointing
    assert placement.describe() == "cuda:0, bfloat16, flash_attention_2, gradient checkpointing"


@pytest.mark.parametrize(
    ("accelerator", "dtype", "attention"),
    [
        (Accelerator(cuda_devices=1, bf16=True, flash_attention=False), torch.bfloat16, "sdpa"),
        (Accelerator(cuda_devices=1, bf16=False, flash_attention=False), torch.float16, "sdpa"),
    ],
    ids=["no-flash-attn", "pre-ampere"],
)
def test_gpus_without_flash_attention_or_bf16_fall_back(
    accelerator: Accelerator, dtype: torch.dtype, attention: str
) -> None:
    placement = plan(BASE, accelerator)

    assert (placement.dtype, placement.attn_implementation) == (dtype, attention)


def test_a_worker_with_several_gpus_spreads_the_model_over_them() -> None:
    placement = plan(BASE, Accelerator(cuda_devices=4, bf16=True, flash_attention=True))

    assert placement.device_map == "auto"
    assert placement.load_kwargs()["device_map"] == "auto"


def test_the_base_models_settings_win_over_the_defaults() -> None:
    chosen = BASE.model_copy(
        update={"attn_implementation": "eager", "gradient_checkpointing": False}
    )
    on_cpu = BASE.model_copy(update={"gradient_checkpointing": True})

    assert plan(chosen, ONE_H100).attn_implementation == "eager"
    assert not plan(chosen, ONE_H100).gradient_checkpointing
    assert plan(on_cpu, Accelerator()).gradient_checkpointing


def test_qlora_loads_the_base_in_4_bit_nf4_computing_in_the_training_dtype() -> None:
    qlora = BASE.model_copy(update={"quantization": "nf4"})

    kwargs = plan(qlora, ONE_H100).load_kwargs()

    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert "QLoRA" in plan(qlora, ONE_H100).describe()


def test_an_unknown_quantization_or_attention_is_refused_in_the_settings() -> None:
    with pytest.raises(ValueError, match="quantization"):
        BaseModelConfig(name="m", path="/m", quantization="int3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attn_implementation"):
        BaseModelConfig(name="m", path="/m", attn_implementation="fast")  # type: ignore[arg-type]


def test_a_data_parallel_rank_takes_its_own_gpu_whole() -> None:
    four = Accelerator(cuda_devices=4, bf16=True, flash_attention=True)

    assert plan(BASE, four, rank=2).device_map == "cuda:2"
    assert plan(BASE, Accelerator(), rank=1).device_map is None  # gloo ranks on the CPU
