"""Trained tokens per second of OpenFT's trainer against a plain TRL SFTTrainer, side by side.

Both fine-tune the same ~20M-parameter Llama-architecture model (random weights, the demo model's
tokenizer and chat template) with the same LoRA (rank 16, all linear layers), learning rate,
batch size and number of steps, on the same chats whose lengths spread from 20 to 1,000 tokens
(Pareto-like: most short, a few long). The baseline is TRL with its defaults (padded batches, no
packing), fed prompt/completion pairs so that it, like OpenFT, takes the loss on the answers only.
Tokens/s counts real (non-padding) tokens; tokenization is outside the timed part on both sides.
Run: `.venv/bin/python bench/train_throughput.py [--examples 256] [--batch-size 8]`.
"""

from __future__ import annotations

import argparse
import os
import random
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
from results import write_result
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from service.settings import ALL_LINEAR, BaseModelConfig
from trainer.chat_masks import tokenize_chat
from trainer.demo_model import create_demo_model, synthetic_corpus
from trainer.hyperparameters import Hyperparameters
from trainer.sft import StepMetrics, TrainingHooks, train_lora

LEARNING_RATE = 2e-4
MAX_LENGTH = 1024
RANK, ALPHA = 16, 32


def build_model(folder: Path, tokenizer_dir: Path) -> int:
    """A ~20M-parameter Llama with random weights, saved with the demo model's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def chats(tokenizer: Any, n: int, seed: int) -> list[list[dict[str, str]]]:
    """``n`` one-turn chats whose token lengths follow a Pareto-like spread over 20..1,000."""
    rng = random.Random(seed)
    corpus = synthetic_corpus(seed)
    text = " ".join(corpus)
    chars_per_token = len(text) / len(tokenizer(text).input_ids)
    found = []
    for _ in range(n):
        target = min(1000, int(20 * rng.paretovariate(1.1)))
        question = max(8, target // 5)
        start = rng.randrange(0, len(text) - 8000)
        user = text[start : start + int(question * chars_per_token)]
        answer_start = start + len(user)
        answer = text[answer_start : answer_start + int((target - question) * chars_per_token)]
        found.append([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
    return found


def run_openft(
    model_dir: Path, conversations: list[Any], batch_size: int, out: Path
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = [tokenize_chat(tokenizer, c, max_length=MAX_LENGTH) for c in conversations]
    base = BaseModelConfig(
        name="bench-llama",
        path=str(model_dir),
        lora_rank=RANK,
        lora_alpha=ALPHA,
        learning_rate=LEARNING_RATE,
        max_seq_length=MAX_LENGTH,
    )
    hp = Hyperparameters(n_epochs=1, batch_size=batch_size, learning_rate_multiplier=1.0)
    losses: list[float] = []
    marks: list[float] = []

    def on_step(metrics: StepMetrics) -> None:
        losses.append(metrics.train_loss)
        marks.append(time.perf_counter())

    # Timed from the first step to the end of the last, as trainer.train() is on the TRL side:
    # loading the model before, and the resume snapshot after, are outside both.
    hooks = TrainingHooks(on_start=lambda: marks.append(time.perf_counter()), on_step=on_step)
    result = train_lora(base, examples, hp, seed=0, output_dir=out, hooks=hooks)
    return {"seconds": marks[-1] - marks[0], "tokens": result.trained_tokens, "losses": losses}


def run_trl(
    model_dir: Path, conversations: list[Any], batch_size: int, out: Path
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])
    config = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=MAX_LENGTH,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=list(ALL_LINEAR), lora_dropout=0.0,
        bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = SFTTrainer(
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    scratch = Path(tempfile.mkdtemp(prefix="openft-train-bench-"))
    try:
        demo = create_demo_model(scratch / "demo")
        model_dir = scratch / "llama"
        params = build_model(model_dir, demo)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        conversations = chats(tokenizer, args.examples, seed=1)
        lengths = sorted(
            len(tokenize_chat(tokenizer, c, max_length=MAX_LENGTH).input_ids) for c in conversations
        )
        print(
            f"model: Llama, {params / 1e6:.1f}M parameters, LoRA r={RANK} on all linear layers; "
            f"{args.examples} chats, tokens min {lengths[0]} / median "
            f"{lengths[len(lengths) // 2]} / max {lengths[-1]}; batch size {args.batch_size}; "
            f"{args.threads} CPU threads; torch {torch.__version__}"
        )
        baseline = run_trl(model_dir, conversations, args.batch_size, scratch / "trl")
        ours = run_openft(model_dir, conversations, args.batch_size, scratch / "openft")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, run in (("TRL SFTTrainer (padded)", baseline), ("OpenFT trainer", ours)):
        rate = run["tokens"] / run["seconds"]
        final = tail_mean(run["losses"])
        print(
            f"{name:24s} {len(run['losses']):4d} steps {run['tokens']:8,d} tokens "
            f"{run['seconds']:7.1f} s {rate:8.0f} tokens/s  final loss {final:.4f}"
        )
    ratio = (ours["tokens"] / ours["seconds"]) / (baseline["tokens"] / baseline["seconds"])
    drift = tail_mean(ours["losses"]) / tail_mean(baseline["losses"]) - 1
    print(f"throughput ratio (OpenFT / TRL): {ratio:.2f}x (bar >= 1.5x)")
    print(f"final loss difference: {drift:+.1%} (bar: within 5%)")
    write_result(
        "train_throughput",
        {
            "tokens_per_second": {
                "trl": round(baseline["tokens"] / baseline["seconds"], 1),
                "openft": round(ours["tokens"] / ours["seconds"], 1),
            },
            "ratio": round(ratio, 3),
            "final_loss_difference": round(drift, 4),
        },
    )


if __name__ == "__main__":
    main()
