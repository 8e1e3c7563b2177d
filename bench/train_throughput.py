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

Quality, judged the same way for both adapters (`bench/train_quality.py`): the final training
loss; the held-out validation loss (OpenFT's evaluation, on the tokens OpenFT trains); and, on
the real demo model, answers through vLLM. The matched TRL run trains on OpenFT's tokens and
labels, so its logged loss counts what OpenFT's counts; what TRL's own labels would log (they
also count the chat template's "\n" after each answer's end-of-turn token) is measured on the
same adapter. `--size smollm2` fine-tunes the real demo model (SmolLM2-135M-Instruct, built
offline) on the sample FAQ with a job's `auto` hyperparameters (3 epochs, batch size 1, the
model's learning-rate multiplier) and asks the taught questions and the held-out paraphrases.
Run: `.venv/bin/python bench/train_throughput.py [--size tiny|small|smollm2] [--examples 256]
[--batch-size 8] [--max-length 1024] [--peak-tflops T] [--no-trl-defaults]`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from results import machine, write_result
from torch.utils.data import SequentialSampler
from train_quality import (
    FAQ,
    answer_scores,
    sample_faq,
    served_answers,
    validation_loss,
    with_trl_labels,
)
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from trl import SFTConfig, SFTTrainer

from service.settings import SMOLLM2_MODEL_NAME, BaseModelConfig, Settings
from trainer.chat_masks import IGNORE_INDEX, TokenizedExample, tokenize_chat
from trainer.demo_model import ARCHITECTURES, create_demo_model, synthetic_corpus
from trainer.hyperparameters import Hyperparameters, resolve
from trainer.loop import StepMetrics, TrainingHooks, epoch_order, train_lora
from trainer.placement import Accelerator, Placement, load_base, plan
from trainer.run import TOKENS_PER_FORWARD, TrainingRun
from trainer.smollm2 import create_smollm2

LEARNING_RATE = 2e-4
MAX_LENGTH = 1024
RANK, ALPHA = 16, 32
# Room for the chat template's tokens: the longest chat is this much under --max-length (1,000
# tokens at the default 1024).
TEMPLATE_ROOM = 24
# The real demo model, as --size.
DEMO = "smollm2"

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


@dataclass
class Workload:
    """What both trainers train on and how: the base as OpenFT sees it, the chats, the
    hyperparameters and the held-out chats; on the real demo model, the FAQ to ask."""

    base: BaseModelConfig
    parameters: int
    conversations: list[Any]
    validation: list[Any]
    hp: Hyperparameters
    faq: FAQ | None = None

    @property
    def learning_rate(self) -> float:
        return self.base.learning_rate * self.hp.learning_rate_multiplier

    def tokenized(self, conversations: list[Any]) -> list[TokenizedExample]:
        tokenizer = AutoTokenizer.from_pretrained(self.base.path)
        return [
            tokenize_chat(tokenizer, c, max_length=self.base.max_seq_length) for c in conversations
        ]


def random_model_workload(args: argparse.Namespace, scratch: Path) -> Workload:
    """The ``--size`` model with random weights on synthetic chats, one epoch."""
    demo = create_demo_model(scratch / "demo")
    model_dir = scratch / "model"
    params = build_model(model_dir, demo, args.size, args.max_length)
    base = base_config(model_dir, args.max_length)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    longest = args.max_length - TEMPLATE_ROOM
    hp = Hyperparameters(n_epochs=1, batch_size=args.batch_size or 8, learning_rate_multiplier=1.0)
    return Workload(
        base, params, chats(tokenizer, args.examples, seed=1, longest=longest),
        chats(tokenizer, max(8, args.examples // 8), seed=2, longest=longest), hp,
    )  # fmt: skip


def demo_model_workload(args: argparse.Namespace) -> Workload:
    """The real demo model on the sample FAQ with a job's `auto` hyperparameters (a given
    ``--batch-size`` replaces auto's)."""
    settings = Settings(demo_model_name=SMOLLM2_MODEL_NAME)
    base = settings.demo_model
    if not (Path(base.path) / "config.json").exists():
        create_smollm2(Path(base.path), cache=settings.cache_dir / "downloads")
    faq = sample_faq()
    requested = {} if args.batch_size is None else {"batch_size": args.batch_size}
    hp = resolve(
        requested, len(faq.train), auto_learning_rate_multiplier=base.auto_learning_rate_multiplier
    )
    params = sum(p.numel() for p in load_base(base, plan(base, Accelerator.detect())).parameters())
    return Workload(base, params, faq.train, faq.held_out, hp, faq)


def run_openft(workload: Workload, out: Path) -> dict[str, Any]:
    examples = workload.tokenized(workload.conversations)
    losses: list[float] = []
    marks: list[float] = []

    def on_step(metrics: StepMetrics) -> None:
        losses.append(metrics.train_loss)
        marks.append(time.perf_counter())

    # Timed from the first step to the end of the last, as trainer.train() is on the TRL side:
    # loading the model before, and the resume snapshot after, are outside both.
    hooks = TrainingHooks(on_start=lambda: marks.append(time.perf_counter()), on_step=on_step)
    run = TrainingRun(workload.base, examples, workload.hp, seed=0)
    result = train_lora(run, output_dir=out, hooks=hooks)
    return {
        "seconds": marks[-1] - marks[0], "tokens": result.trained_tokens, "losses": losses,
        "adapter": out / "final",
    }  # fmt: skip


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


def in_openft_order(workload: Workload) -> Dataset:
    """OpenFT's tokens and labels, in OpenFT's order for seed 0, every epoch one after the
    other: read in sequence for one epoch, they make OpenFT's batches (an epoch's last short
    batch aside, hence the check)."""
    n, hp = len(workload.conversations), workload.hp
    assert hp.n_epochs == 1 or n % hp.batch_size == 0, "batches would span two epochs"
    examples = workload.tokenized(workload.conversations)
    order = [i for epoch in range(hp.n_epochs) for i in epoch_order(0, epoch, n)]
    return Dataset.from_list(
        [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in order]
    )


def run_trl(workload: Workload, out: Path, matched: Placement | None = None) -> dict[str, Any]:
    """TRL's SFTTrainer with its defaults on prompt/completion pairs; with ``matched``, OpenFT's
    placement and OpenFT's tokens, labels and batches (``in_openft_order``)."""
    base, hp = workload.base, workload.hp
    if matched is not None:
        data, epochs, extra = in_openft_order(workload), 1, matched_settings(matched)
    else:
        pairs = [{"prompt": c[:-1], "completion": c[-1:]} for c in workload.conversations]
        data, epochs, extra = Dataset.from_list(pairs), hp.n_epochs, {}
    config = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=hp.batch_size,
        num_train_epochs=epochs,
        learning_rate=workload.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=base.max_seq_length,
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
        r=base.lora_rank, lora_alpha=base.lora_alpha, target_modules=list(base.lora_target_modules),
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = (InOrderSFTTrainer if matched is not None else SFTTrainer)(
        model=base.path,
        args=config,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(base.path),
        peft_config=lora,
    )
    tokens = epochs * sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(out / "final"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "tokens": tokens, "losses": losses, "adapter": out / "final"}


def quality(workload: Workload, runs: dict[str, dict[str, Any]], scratch: Path) -> dict[str, Any]:
    """Held-out validation loss of each adapter, what TRL's own labels would log on the matched
    TRL adapter, and on the real demo model the served answers' scores."""
    base, found = workload.base, {}
    held_out = workload.tokenized(workload.validation)
    trained = workload.tokenized(workload.conversations)
    for key in ("openft", "trl"):
        loss, accuracy = validation_loss(base, runs[key]["adapter"], held_out, TOKENS_PER_FORWARD)
        found[key] = {"validation_loss": loss, "validation_token_accuracy": accuracy}
    end_of_turn = next(t for t in reversed(trained[0].labels) if t != IGNORE_INDEX)
    ours, theirs = (
        validation_loss(base, runs["trl"]["adapter"], examples, TOKENS_PER_FORWARD)[0]
        for examples in (trained, with_trl_labels(trained, end_of_turn))
    )
    found["trl_own_labels_vs_openft_labels"] = theirs / ours - 1
    if workload.faq is not None:
        faq = workload.faq
        questions = [q for q, _, _ in faq.taught + faq.paraphrased]
        adapters = {key: runs[key]["adapter"] for key in ("openft", "trl")}
        answers = served_answers(base, adapters, questions, scratch / "vllm")
        for model, said in answers.items():
            key = model if model in adapters else "base_model"
            found.setdefault(key, {})
            found[key]["taught"] = answer_scores(said[: len(faq.taught)], faq.taught)
            found[key]["held_out"] = answer_scores(said[len(faq.taught) :], faq.paraphrased)
    return found


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
    parser.add_argument("--size", choices=[*sorted(SIZES), DEMO], default="tiny")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument(
        "--batch-size", type=int, default=None, help=f"default 8 (for {DEMO}: a job's auto)"
    )
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--no-trl-defaults",
        action="store_true",
        help="skip the reference run of TRL with its own defaults (most of an hour on the demo "
        "model on a CPU); the matched comparison is unchanged",
    )
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


def describe(args: argparse.Namespace, workload: Workload, device: str) -> str:
    base, hp = workload.base, workload.hp
    lengths = sorted(len(e.input_ids) for e in workload.tokenized(workload.conversations))
    if args.size == DEMO:
        model = f"{base.name} (real weights), {workload.parameters / 1e6:.1f}M parameters"
        data = f"the sample FAQ, {len(lengths)} chats, {len(workload.validation)} held out"
    else:
        architecture, shape = SIZES[args.size]
        layers, width = shape["num_hidden_layers"], shape["hidden_size"]
        model = (
            f"{architecture} ({args.size}: {layers} layers, {width} wide), "
            f"{workload.parameters / 1e6:.1f}M parameters"
        )
        data = f"{len(lengths)} chats, {len(workload.validation)} held out"
    placement = plan(base, Accelerator.detect())
    where = f"{device}; both {placement.describe()}" if torch.cuda.is_available() else device
    return (
        f"model: {model}, LoRA r={base.lora_rank} on {', '.join(base.lora_target_modules)}; "
        f"{data}, tokens min {lengths[0]} / median {lengths[len(lengths) // 2]} / max "
        f"{lengths[-1]}; {hp.n_epochs} epochs, batch size {hp.batch_size}, learning rate "
        f"{workload.learning_rate:g}; {where}; torch {torch.__version__}"
    )


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available()
    device = (
        torch.cuda.get_device_name(0) if cuda else f"{machine()['cpu']}, {args.threads} threads"
    )
    peak = args.peak_tflops
    if peak is None and cuda:
        peak = peak_tflops(device)
    scratch = Path(tempfile.mkdtemp(prefix="openft-train-bench-"))
    try:
        workload = (
            demo_model_workload(args) if args.size == DEMO else random_model_workload(args, scratch)
        )
        workload_line = describe(args, workload, device)
        print(workload_line, flush=True)
        placement = plan(workload.base, Accelerator.detect())
        runs = {"trl": run_trl(workload, scratch / "trl", matched=placement)}
        if not args.no_trl_defaults:
            runs["trl_defaults"] = run_trl(workload, scratch / "trl-defaults")
        runs["openft"] = run_openft(workload, scratch / "openft")
        judged = quality(workload, runs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = report(args, workload, runs, judged, peak)
    figures["workload"] = workload_line
    figures["device"] = device
    figures["openft_placement"] = placement.describe()
    name = "train_throughput" if args.size == "tiny" else f"train_throughput_{args.size}"
    write_result(name, figures)


def report(
    args: argparse.Namespace, workload: Workload, runs: dict[str, dict[str, Any]],
    judged: dict[str, Any], peak: float | None,
) -> dict[str, Any]:  # fmt: skip
    """Print the figures; returns them for the results file."""
    rates = {key: run["tokens"] / run["seconds"] for key, run in runs.items()}
    names = {"trl": "TRL SFTTrainer (matched)", "trl_defaults": "TRL SFTTrainer defaults",
             "openft": "OpenFT trainer"}  # fmt: skip
    for key, run in runs.items():
        rate, final = rates[key], tail_mean(run["losses"])
        held = judged.get(key, {}).get("validation_loss")
        validation = f"  validation loss {held:.4f}" if held is not None else ""
        utilisation = (
            f"  MFU {mfu(workload.parameters, rate, peak):.1%}" if peak is not None else ""
        )
        print(
            f"{names[key]:24s} {len(run['losses']):4d} steps {run['tokens']:8,d} tokens "
            f"{run['seconds']:7.1f} s {rate:8.0f} tokens/s  final loss {final:.4f}"
            f"{validation}{utilisation}"
        )
    ours, trl = runs["openft"], runs["trl"]
    ratio = rates["openft"] / rates["trl"]
    drift = tail_mean(ours["losses"]) / tail_mean(trl["losses"]) - 1
    steps = [a / b - 1 for a, b in zip(ours["losses"], trl["losses"], strict=True)]
    defaults = runs.get("trl_defaults")  # absent with --no-trl-defaults
    order_alone = (
        None if defaults is None else tail_mean(defaults["losses"]) / tail_mean(trl["losses"]) - 1
    )
    held_out = judged["openft"]["validation_loss"] / judged["trl"]["validation_loss"] - 1
    newline = judged["trl_own_labels_vs_openft_labels"]
    print(f"throughput ratio (OpenFT / TRL, same settings): {ratio:.2f}x (bar >= 1.5x)")
    if order_alone is not None:
        print(
            f"vs TRL with its defaults: {rates['openft'] / rates['trl_defaults']:.2f}x; TRL's "
            f"own shuffle and defaults vs the matched TRL, final loss: {order_alone:+.2%}"
        )
    print(f"final training loss difference: {drift:+.2%}; held-out validation loss difference: "
          f"{held_out:+.2%} (bars: within 2%); per step, same batches: largest "
          f"{max(steps, key=abs):+.2%}, mean {statistics.fmean(steps):+.2%}")  # fmt: skip
    print(f"TRL's own labels (+ the template's token after each answer) on the matched TRL "
          f"adapter's training chats: loss {newline:+.2%} against OpenFT's labels")  # fmt: skip
    for key in ("base_model", "openft", "trl"):
        if "taught" in judged.get(key, {}):
            taught, held = judged[key]["taught"], judged[key]["held_out"]
            print(f"answers of {key:10s}: taught questions {taught['fact_share']:.0%} contain the "
                  f"fact (token F1 {taught['token_f1']:.2f}); held-out paraphrases "
                  f"{held['fact_share']:.0%} (token F1 {held['token_f1']:.2f})")  # fmt: skip
    if peak is not None:
        print(f"MFU: 6 x {workload.parameters / 1e6:.1f}M parameters x tokens/s / {peak:g} "
              "TFLOP/s (bf16 dense)")  # fmt: skip
    figures: dict[str, Any] = {
        "size": args.size,
        "parameters": workload.parameters,
        "hyperparameters": workload.hp.as_dict(),
        "trl_settings": "matched to OpenFT's placement, tokens, labels and batches "
                        "(trl_defaults: TRL's own)",
        "tokens_per_second": {key: round(rate, 1) for key, rate in rates.items()},
        "ratio": round(ratio, 3),
        "ratio_vs_trl_defaults": (
            None if defaults is None else round(rates["openft"] / rates["trl_defaults"], 3)
        ),
        "final_loss": {key: round(tail_mean(run["losses"]), 4) for key, run in runs.items()},
        "final_loss_difference": round(drift, 4),
        "validation_loss_difference": round(held_out, 4),
        "per_step_loss_difference": {
            "largest": round(max(steps, key=abs), 4), "mean": round(statistics.fmean(steps), 4),
        },
        "trl_defaults_vs_matched_final_loss": (
            None if order_alone is None else round(order_alone, 4)
        ),
        "trl_own_labels_vs_openft_labels": round(newline, 4),
        "quality": judged,
    }  # fmt: skip
    if peak is not None:
        figures["peak_tflops"] = peak
        figures["mfu"] = {
            key: round(mfu(workload.parameters, rate, peak), 4) for key, rate in rates.items()
        }
    return figures


if __name__ == "__main__":
    main()
