"""Reinforcement fine-tuning: OpenFT's GRPO loop against TRL's GRPOTrainer, side by side.

Both train a LoRA (the demo model's rank and targets) on SmolLM2-135M-Instruct, the real demo
model, with the same prompts, reward, group size, learning rate, KL weight (0.04), answer length
and number of steps, sampling with `generate` on the CPU. The task: answer yes/no questions (whose
answer is yes) starting with "Yes", which the base model never does greedily and does in about
one sampled answer in twelve. OpenFT grades with the python grader in its sandbox (one process a
step); TRL calls the same rule in-process. Reported per side: graded steps/s, sampled answer
tokens/s, the train reward per step, and the mean reward of greedy answers to 8 held-out
questions before and after training (the same evaluation code for both, outside the timed part).
Run: `.venv/bin/python bench/rft_throughput.py [--steps 12] [--prompts-per-step 4] [--samples 8]
[--max-tokens 8] [--learning-rate 6e-4] [--only openft|trl]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from results import machine, write_result
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from graders.python_sandbox import SandboxLimits
from service.settings import SMOLLM2_MODEL_NAME, BaseModelConfig, Settings
from trainer.dataset import PromptExample, prepare_file
from trainer.hyperparameters import resolve
from trainer.judge import HttpJudge
from trainer.loop import StepMetrics, TrainingHooks, train_lora
from trainer.placement import load_tokenizer
from trainer.reinforcement import ReinforcementSetup
from trainer.run import ReinforcementRun, TrainingRun
from trainer.smollm2 import create_smollm2

KL_BETA = 0.04
# Yes/no questions whose answer is yes; the reward: the answer starts with "yes". The base model
# greedily starts none of them so (it opens with "The answer to this question is..."), and about
# one sampled answer in twelve, so a group of 8 answers often holds a rewarded one.
OPENS_WITH_YES = {
    "type": "python",
    "name": "opens_with_yes",
    "source": (
        "def grade(sample, item):\n"
        "    return 1.0 if sample['output_text'].strip().lower().startswith('yes') else 0.0\n"
    ),
}
QUESTIONS = [
    "Is the sun a star?", "Can birds fly?", "Is water made of hydrogen and oxygen?",
    "Is Paris in France?", "Do fish live in water?", "Is ice cold?", "Is the earth round?",
    "Do plants need light?", "Is the moon smaller than the earth?", "Do cats have whiskers?",
    "Is snow made of water?", "Can people swim?", "Is gold a metal?", "Do bees make honey?",
    "Is the ocean salty?", "Does the sun rise in the east?",
]  # fmt: skip
HELD_OUT = [
    "Is grass green?", "Do dogs bark?", "Is fire hot?", "Can fish swim?",
    "Is Rome in Italy?", "Do trees have leaves?", "Is the sky above us?", "Do cows eat grass?",
]  # fmt: skip


def opens_with_yes(text: str) -> float:
    return 1.0 if text.strip().lower().startswith("yes") else 0.0


def prompt_file(questions: list[str]) -> bytes:
    import json

    rows = [{"messages": [{"role": "user", "content": q}]} for q in questions]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def greedy_reward(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_tokens: int
) -> float:
    """Mean reward of greedy answers to the held-out prompts (the same code for both sides)."""
    model.eval()
    rewards = []
    with torch.no_grad():
        for question in HELD_OUT:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            output = model.generate(
                **ids,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
            answer = tokenizer.decode(
                output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
            )
            rewards.append(opens_with_yes(answer))
    return statistics.fmean(rewards)


def questions(args: argparse.Namespace) -> list[str]:
    """One epoch's prompts: the questions, repeated to fill ``steps`` steps."""
    wanted = args.steps * args.prompts_per_step
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(wanted)]


def lora(base: BaseModelConfig) -> LoraConfig:
    return LoraConfig(
        r=base.lora_rank,
        lora_alpha=base.lora_alpha,
        target_modules=list(base.lora_target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def base_model() -> BaseModelConfig:
    demo = Settings(demo_model_name=SMOLLM2_MODEL_NAME)
    create_smollm2(Path(demo.demo_model.path), cache=demo.cache_dir / "downloads")
    return demo.demo_model


def openft(base: BaseModelConfig, args: argparse.Namespace, lr: float) -> dict[str, Any]:
    tokenizer = load_tokenizer(base)
    data = prompt_file(questions(args))
    examples: list[Any] = prepare_file(
        [data], tokenizer, file_id="bench", method="reinforcement", max_length=512,
        param="validation_file",
    ).examples  # fmt: skip
    assert all(isinstance(e, PromptExample) for e in examples)
    requested = {
        "n_epochs": 1,
        "batch_size": args.prompts_per_step,
        "compute_multiplier": args.samples / 4,
        "eval_interval": args.steps,
        "learning_rate_multiplier": lr / base.learning_rate,
    }
    hp = resolve(requested, len(examples), auto_learning_rate_multiplier=1.0)
    setup = ReinforcementSetup(
        grader=OPENS_WITH_YES,
        samples_per_prompt=args.samples,
        eval_samples=1,
        max_completion_tokens=args.max_tokens,
        kl_beta=KL_BETA,
    )
    run = TrainingRun(
        base,
        examples,
        hp,
        seed=1,
        reinforcement=ReinforcementRun(setup, HttpJudge({}), SandboxLimits(timeout_s=30)),
    )
    steps: list[StepMetrics] = []
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = train_lora(
            run, output_dir=Path(scratch), hooks=TrainingHooks(on_step=steps.append)
        )
        elapsed = time.perf_counter() - started
    details = [s.details or {} for s in steps]
    sampled = sum(
        d["completion_tokens_mean"] * args.prompts_per_step * args.samples for d in details
    )
    sampling = sum(d["timing"]["sampling"] for d in details)
    grading = sum(d["timing"]["grading"] for d in details)
    return {
        "seconds": elapsed,
        "steps_per_s": len(steps) / elapsed,
        "sampled_tokens_per_s": sampled / elapsed,
        "sampling_share": sampling / elapsed,
        "grading_share": grading / elapsed,
        "rewards": [s.train_mean_token_accuracy for s in steps],
        "after": greedy_reward(result.model, tokenizer, args.max_tokens),
    }


def trl(base: BaseModelConfig, args: argparse.Namespace, lr: float) -> dict[str, Any]:
    tokenizer = load_tokenizer(base)
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}]} for q in questions(args)]
    )
    rewards: list[float] = []
    lengths: list[float] = []

    def reward(completions: list[Any], **_: Any) -> list[float]:
        found = [opens_with_yes(c[0]["content"]) for c in completions]
        rewards.append(statistics.fmean(found))
        return found

    with tempfile.TemporaryDirectory() as scratch:
        config = GRPOConfig(
            output_dir=scratch,
            per_device_train_batch_size=args.prompts_per_step * args.samples,
            gradient_accumulation_steps=1,
            num_generations=args.samples,
            max_completion_length=args.max_tokens,
            learning_rate=lr,
            lr_scheduler_type="linear",
            warmup_steps=0,
            beta=KL_BETA,
            loss_type="grpo",
            max_steps=args.steps,
            temperature=1.0,
            top_k=0,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            gradient_checkpointing=False,
            seed=1,
            dataloader_num_workers=0,
        )
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base.path), lora(base))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        started = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - started
    for entry in trainer.state.log_history:
        if "completions/mean_length" in entry:
            lengths.append(entry["completions/mean_length"])
    sampled = sum(lengths) * args.prompts_per_step * args.samples
    trained = trainer.model
    assert isinstance(trained, PeftModel)
    return {
        "seconds": elapsed,
        "steps_per_s": args.steps / elapsed,
        "sampled_tokens_per_s": sampled / elapsed,
        "sampling_share": None,
        "grading_share": None,
        "rewards": rewards,
        "after": greedy_reward(trained, tokenizer, args.max_tokens),
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt (group)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=6e-4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", choices=("openft", "trl"), default=None)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    base = base_model()
    tokenizer = load_tokenizer(base)
    before = greedy_reward(
        AutoModelForCausalLM.from_pretrained(base.path), tokenizer, args.max_tokens
    )
    print(f"held-out greedy reward of the base model: {before:.3f}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name, side in (("openft", openft), ("trl", trl)):
        if args.only not in (None, name):
            continue
        torch.manual_seed(1)
        found = side(base, args, args.learning_rate)
        results[name] = found
        curve = " ".join(f"{r:.2f}" for r in found["rewards"])
        print(
            f"{name:7s} {found['seconds']:7.1f} s  {found['steps_per_s']:.3f} steps/s  "
            f"{found['sampled_tokens_per_s']:6.1f} sampled tokens/s  "
            f"held-out reward {before:.3f} -> {found['after']:.3f}  train rewards: {curve}  "
            f"(sampling {found['sampling_share'] or 0:.0%}, "
            f"grading {found['grading_share'] or 0:.0%})",
            flush=True,
        )
    if len(results) == 2:
        ratio = results["openft"]["steps_per_s"] / results["trl"]["steps_per_s"]
        print(f"OpenFT / TRL graded steps/s: {ratio:.2f}x")
        write_result(
            "rft_throughput",
            {"machine": machine(), "args": vars(args), "before": before, **results},
        )


if __name__ == "__main__":
    main()
