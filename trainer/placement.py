"""How a base model is loaded to be trained: device, precision, attention kernel, activation
recomputation and 4-bit quantization (QLoRA); and its tokenizer, with the configured chat template.

One decision, made from the base model's settings and what this process can use (the forgetting
check then measures the model as training left it). ``plan`` is pure (``Accelerator`` says what is
here), so every combination is tested on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from service.settings import BaseModelConfig

# flash-attn's kernels need an Ampere or newer GPU (compute capability 8.0).
FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Accelerator:
    """What this process can compute on."""

    cuda_devices: int = 0
    bf16: bool = False  # the GPU computes in bfloat16
    flash_attention: bool = False  # flash-attn is installed and every GPU here can run it

    @classmethod
    def detect(cls) -> Accelerator:
        if not torch.cuda.is_available():
            return cls()
        count = torch.cuda.device_count()
        capable = all(
            torch.cuda.get_device_capability(i) >= FLASH_ATTENTION_MIN_CAPABILITY
            for i in range(count)
        )
        return cls(
            cuda_devices=count,
            bf16=torch.cuda.is_bf16_supported(),
            flash_attention=capable and importlib.util.find_spec("flash_attn") is not None,
        )


@dataclass(frozen=True)
class Placement:
    """The arguments a model is loaded with, and what is done to it before LoRA goes on."""

    device_map: str | None  # None: the CPU
    dtype: torch.dtype
    attn_implementation: str
    gradient_checkpointing: bool
    quantization: str | None  # "nf4": the frozen base in 4 bits, LoRA on top (QLoRA)

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AutoModelForCausalLM.from_pretrained``."""
        kwargs: dict[str, Any] = {
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
        }
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        if self.quantization == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=self.dtype,
            )
        return kwargs

    def describe(self) -> str:
        """One line for the worker's log."""
        where = self.device_map or "cpu"
        dtype = str(self.dtype).removeprefix("torch.")
        extras = [self.attn_implementation]
        if self.gradient_checkpointing:
            extras.append("gradient checkpointing")
        if self.quantization:
            extras.append(f"{self.quantization} base (QLoRA)")
        return f"{where}, {dtype}, " + ", ".join(extras)


def plan(base: BaseModelConfig, accelerator: Accelerator, rank: int | None = None) -> Placement:
    """Where and how ``base`` is loaded on ``accelerator``; ``rank``: this process's place in a
    data-parallel job (``trainer.data_parallel``), which takes GPU number ``rank`` alone.

    On GPUs: bfloat16 (float16 on cards without it), flash-attn when it is installed and the cards
    can run it, else PyTorch's SDPA, and activations recomputed on backward unless the base model
    says otherwise. One GPU takes the whole model; a worker that sees several spreads the layers
    over them (accelerate's ``device_map="auto"``), which fits a base too large for one card. On
    the CPU: float32 and SDPA, no recomputation (memory is rarely what runs out there).
    """
    gpu = accelerator.cuda_devices > 0
    if not gpu:
        dtype, device_map = torch.float32, None
    else:
        dtype = torch.bfloat16 if accelerator.bf16 else torch.float16
        device_map = "cuda:0" if accelerator.cuda_devices == 1 else "auto"
        if rank is not None:
            device_map = f"cuda:{rank}"
    attention = base.attn_implementation or (
        "flash_attention_2" if gpu and accelerator.flash_attention else "sdpa"
    )
    checkpointing = base.gradient_checkpointing
    if checkpointing is None:
        checkpointing = gpu
    return Placement(device_map, dtype, attention, checkpointing, base.quantization)


def load_base(base: BaseModelConfig, placement: Placement) -> Any:
    """The base model, placed, ready for an adapter to be put on (or loaded onto) it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.path, **placement.load_kwargs())
    if placement.quantization:
        from peft import prepare_model_for_kbit_training

        # Norms in float32 and inputs that carry gradients, as QLoRA needs.
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=placement.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if placement.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # the frozen embeddings' output must carry gradients
    return model


def load_tokenizer(base: BaseModelConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with the ``chat_template`` setting in place of its own."""
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    template = base.chat_template_text()
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer
