"""Trained tokens per second of OpenFT's trainer against a plain TRL SFTTrainer, side by side.

Both fine-tune the same model (random weights, the demo model's tokenizer and chat template) with
the same LoRA (rank 16, all linear layers), learning rate, batch size and number of steps, on the
same chats whose lengths spread from 20 to 1,000 tokens (Pareto-like: most short, a few long; at
another `--max-length`, to that length less 24 for the template). `--size tiny` (the default) is
a ~20M-parameter Llama, `--size small` a Qwen2 with Qwen2.5-0.5B's decoder
(`trainer.demo_model.ARCHITECTURES`), for GPUs. The baseline is TRL's SFTTrainer (padded
batches, no packing), fed prompt/completion pairs so that it, like OpenFT, takes the loss on the
answers only, and given OpenFT's precision, attention kernel and gradient checkpointing
(`trainer.placement.plan`: float32 and no checkpointing on a CPU, bf16 and checkpointing on a
GPU), so the ratio compares the training loops, not the settings. The matched TRL run also
takes OpenFT's batches in OpenFT's order (the examples in OpenFT's epoch order, read in sequence),
so the losses compare step by step: the final loss of either side is the mean of its last tenth
of steps, and with two different shuffles that is the loss of different batches (a 1.4% gap from
the order alone, measured). TRL with its own defaults (bf16 autocast and gradient checkpointing,
even on a CPU, and its own shuffle) runs too, for reference. Tokens/s counts real (non-padding)
tokens; tokenization is outside the timed part on both sides.
Run: `.venv/bin/python bench/train_throughput.py [--size tiny|small] [--examples 256]
[--batch-size 8] [--max-length 1024] [--peak-tflops T]`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from results import machine, write_result
from torch.utils.data import SequentialSampler
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from trl import SFTConfig, SFTTrainer

from service.settings import ALL_LINEAR, BaseModelConfig
from trainer.chat_masks import tokenize_chat
from trainer.demo_model import ARCHITECTURES, create_demo_model, synthetic_corpus
from trainer.hyperparameters import Hyperparameters
from trainer.loop import StepMetrics, TrainingHooks, epoch_order, train_lora
from trainer.placement import Accelerator, Placement, plan
from trainer.run import TrainingRun

LEARNING_RATE = 2e-4
MAX_LENGTH = 1024
RANK, ALPHA = 16, 32
# Room for the chat template's tokens: the longest chat is this much under --max-length (1,000
# tokens at the default 1024).
TEMPLATE_ROOM = 24

# The models a run can train: architecture and decoder shape. "tiny" is the ~20M Llama the CPU
# figures were measured on; "small" is Qwen2.5-0.5B's decoder (24 layers, 896 wide, 14 heads, 2 KV
# heads, MLP 4864; tied embeddings as in Qwen2.5-0.5B), the demo model's "small" shape, for GPUs.
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": ("Llama", {
        "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 6,
        "num_attention_heads": 8, "num_key_value_heads": 8,
    }),
    "small": ("Qwen2", {**ARCHITECTURES["small"], "tie_word_embeddings": True}),
}  # fmt: skip
CONFIGS: dict[str, tuple[type[Any], type[Any]]] = {
    "Llama": (LlamaConfig, LlamaForCausalLM),
    "Qwen2": (Qwen2Config, Qwen2ForCausalLM),
}
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a pattern of the CUDA device name;
# the first that matches counts. Others: give --peak-tflops.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*(SXM|HBM3)", 989.0),
    (r"H200", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)


def build_model(folder: Path, tokenizer_dir: Path, size: str, max_length: int) -> int:
    """The ``size`` model (see ``SIZES``) with random weights, saved with the demo model's
    tokenizer; returns its number of parameters."""
    architecture, shape = SIZES[size]
    config_class, model_class = CONFIGS[architecture]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = config_class(
        vocab_size=len(tokenizer),
        **shape,
        max_position_embeddings=max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def chats(
    tokenizer: Any, n: int, seed: int, longest: int = MAX_LENGTH - TEMPLATE_ROOM
) -> list[list[dict[str, str]]]:
    """``n`` one-turn chats whose token lengths follow a Pareto-like spread over 20..``longest``."""
    rng = random.Random(seed)
    corpus = synthetic_corpus(seed)
    text = " ".join(corpus)
    chars_per_token = len(text) / len(tokenizer(text).input_ids)
    # Characters kept free after a chat's start: 8,000 (as ever) unless the longest needs more.
    room = max(8000, int(longest * chars_per_token) + 1)
    found = []
    for _ in range(n):
        target = min(longest, int(20 * rng.paretovariate(1.1)))
        question = max(8, target // 5)
        start = rng.randrange(0, len(text) - room)
        user = text[start : start + int(question * chars_per_token)]
        answer_start = start + len(user)
        answer = text[answer_start : answer_start + int((target - question) * chars_per_token)]
        found.append([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
    return found


def base_config(model_dir: Path, max_length: int) -> BaseModelConfig:
    """The model as OpenFT's trainer sees it; ``plan`` on it says how OpenFT places it."""
    return BaseModelConfig(
        name="bench-model",
        path=str(model_dir),
        lora_rank=RANK,
        lora_alpha=ALPHA,
        learning_rate=LEARNING_RATE,
        max_seq_length=max_length,
    )


def run_openft(
    base: BaseModelConfig, conversations: list[Any], batch_size: int, out: Path
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    examples = [tokenize_chat(tokenizer, c, max_length=base.max_seq_length) for c in conversations]
    hp = Hyperparameters(n_epochs=1, batch_size=batch_size, learning_rate_multiplier=1.0)
    losses: list[float] = []
    marks: list[float] = []

    def on_step(metrics: StepMetrics) -> None:
        losses.append(metrics.train_loss)
        marks.append(time.perf_counter())

    # Timed from the first step to the end of the last, as trainer.train() is on the TRL side:
    # loading the model before, and the resume snapshot after, are outside both.
    hooks = TrainingHooks(on_start=lambda: marks.append(time.perf_counter()), on_step=on_step)
    result = train_lora(TrainingRun(base, examples, hp, seed=0), output_dir=out, hooks=hooks)
    return {"seconds": marks[-1] - marks[0], "tokens": result.trained_tokens, "losses": losses}


def matched_settings(placement: Placement) -> dict[str, Any]:
    """SFTConfig fields that give TRL what OpenFT's trainer uses (``placement``): precision,
    attention kernel and gradient checkpointing. TRL's own defaults differ even on a CPU (bf16
    autocast and gradient checkpointing on), which would compare settings rather than loops."""
    dtype = str(placement.dtype).removeprefix("torch.")  # "bfloat16"; a string: args serialize
    return {
        "bf16": placement.dtype == torch.bfloat16,
        "fp16": placement.dtype == torch.float16,
        "gradient_checkpointing": placement.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},  # as trainer.placement
        "model_init_kwargs": {
            "dtype": dtype,
            "attn_implementation": placement.attn_implementation,
        },
    }


class InOrderSFTTrainer(SFTTrainer):
    """SFTTrainer reading its examples in the order given (no shuffle of its own)."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SequentialSampler:
        return SequentialSampler(self.train_dataset)


def run_trl(
    model_dir: Path,
    conversations: list[Any],
    batch_size: int,
    out: Path,
    max_length: int = MAX_LENGTH,
    matched: Placement | None = None,
) -> dict[str, Any]:
    """TRL's SFTTrainer with its defaults; with ``matched``, OpenFT's placement and OpenFT's
    batches (the examples in OpenFT's epoch order for seed 0, read in sequence)."""
    if matched is not None:
        conversations = [conversations[i] for i in epoch_order(0, 0, len(conversations))]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])
    extra = matched_settings(matched) if matched is not None else {}
    config = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        **extra,
    )
    lora = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=list(ALL_LINEAR), lora_dropout=0.0,
        bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = (InOrderSFTTrainer if matched is not None else SFTTrainer)(
        model=str(model_dir),
        args=config,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=lora,
    )
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "tokens": tokens, "losses": losses}


def tail_mean(losses: list[float]) -> float:
    """Mean loss over the last tenth of the steps: one step's loss depends on its batch."""
    return statistics.fmean(losses[-max(1, len(losses) // 10) :])


def peak_tflops(device: str) -> float | None:
    """The dense bf16 peak of a CUDA device, from its name; None when the table lacks it."""
    for pattern, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device, re.IGNORECASE):
            return peak
    return None


def mfu(parameters: int, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation with the usual convention of 6 x parameters FLOPs per trained
    token (forward 2N, backward 4N). LoRA's real work is less, ~4N (no weight gradients for the
    frozen base), plus 2N for the forward recomputed with gradient checkpointing: so ~6N again on
    GPUs, and figures compare with the ones usually published."""
    return 6 * parameters * tokens_per_second / (peak * 1e12)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak, for MFU (default: a table by CUDA device name)",
    )
    args = parser.parse_args()
    if args.max_length < 64:
        parser.error("--max-length must be at least 64")
    return args


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else str(machine()["cpu"])
    peak = args.peak_tflops
    if peak is None and cuda:
        peak = peak_tflops(device)
    architecture, shape = SIZES[args.size]
    scratch = Path(tempfile.mkdtemp(prefix="openft-train-bench-"))
    try:
        demo = create_demo_model(scratch / "demo")
        model_dir = scratch / "model"
        params = build_model(model_dir, demo, args.size, args.max_length)
        base = base_config(model_dir, args.max_length)
        placement = plan(base, Accelerator.detect())
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        conversations = chats(
            tokenizer, args.examples, seed=1, longest=args.max_length - TEMPLATE_ROOM
        )
        lengths = sorted(
            len(tokenize_chat(tokenizer, c, max_length=args.max_length).input_ids)
            for c in conversations
        )
        where = (
            f"{device}; both {placement.describe()}"
            if cuda
            else f"{device}, {args.threads} CPU threads"
        )
        print(
            f"model: {architecture} ({args.size}: {shape['num_hidden_layers']} layers, "
            f"{shape['hidden_size']} wide), {params / 1e6:.1f}M parameters, LoRA r={RANK} on all "
            f"linear layers; {args.examples} chats, tokens min {lengths[0]} / median "
            f"{lengths[len(lengths) // 2]} / max {lengths[-1]} (max length {args.max_length}); "
            f"batch size {args.batch_size}; {where}; torch {torch.__version__}"
        )
        baseline = run_trl(
            model_dir, conversations, args.batch_size, scratch / "trl",
            max_length=args.max_length, matched=placement,
        )  # fmt: skip
        defaults = run_trl(
            model_dir, conversations, args.batch_size, scratch / "trl-defaults",
            max_length=args.max_length,
        )  # fmt: skip
        ours = run_openft(base, conversations, args.batch_size, scratch / "openft")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rates: dict[str, float] = {}
    for key, name, run in (
        ("trl", "TRL SFTTrainer (matched)", baseline),
        ("trl_defaults", "TRL SFTTrainer defaults", defaults),
        ("openft", "OpenFT trainer", ours),
    ):
        rate = rates[key] = run["tokens"] / run["seconds"]
        final = tail_mean(run["losses"])
        utilisation = f"  MFU {mfu(params, rate, peak):.1%}" if peak is not None else ""
        print(
            f"{name:24s} {len(run['losses']):4d} steps {run['tokens']:8,d} tokens "
            f"{run['seconds']:7.1f} s {rate:8.0f} tokens/s  final loss {final:.4f}{utilisation}"
        )
    ratio = rates["openft"] / rates["trl"]
    drift = tail_mean(ours["losses"]) / tail_mean(baseline["losses"]) - 1
    steps = [a / b - 1 for a, b in zip(ours["losses"], baseline["losses"], strict=True)]
    order_alone = tail_mean(defaults["losses"]) / tail_mean(baseline["losses"]) - 1
    print(f"throughput ratio (OpenFT / TRL, same settings): {ratio:.2f}x (bar >= 1.5x)")
    print(f"vs TRL with its defaults: {rates['openft'] / rates['trl_defaults']:.2f}x")
    print(f"final loss difference: {drift:+.2%} (bar: within 5%); per step, same batches: "
          f"largest {max(steps, key=abs):+.2%}, mean {statistics.fmean(steps):+.2%}; TRL's own "
          f"shuffle and defaults vs the matched TRL: {order_alone:+.2%}")  # fmt: skip
    if peak is not None:
        print(f"MFU: 6 x {params / 1e6:.1f}M parameters x tokens/s / {peak:g} TFLOP/s (bf16 dense)")
    figures: dict[str, Any] = {
        "size": args.size,
        "architecture": architecture,
        "parameters": params,
        "max_length": args.max_length,
        "device": device,
        "openft_placement": placement.describe(),
        "trl_settings": "matched to OpenFT's placement (trl_defaults: TRL's own)",
        "tokens_per_second": {key: round(rate, 1) for key, rate in rates.items()},
        "ratio": round(ratio, 3),
        "ratio_vs_trl_defaults": round(rates["openft"] / rates["trl_defaults"], 3),
        "final_loss_difference": round(drift, 4),
        "per_step_loss_difference": {
            "largest": round(max(steps, key=abs), 4), "mean": round(statistics.fmean(steps), 4),
        },
        "trl_defaults_vs_matched_final_loss": round(order_alone, 4),
    }  # fmt: skip
    if peak is not None:
        figures["peak_tflops"] = peak
        figures["mfu"] = {key: round(mfu(params, rate, peak), 4) for key, rate in rates.items()}
    write_result(
        "train_throughput" if args.size == "tiny" else f"train_throughput_{args.size}", figures
    )


if __name__ == "__main__":
    main()
