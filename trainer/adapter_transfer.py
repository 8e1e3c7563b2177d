"""Adapters in and out of OpenFT: check an outside PEFT LoRA adapter against a base model (and
write the copy OpenFT stores), and merge an adapter into full weights.

``openft models import`` and ``openft models export --merged`` run this module as a subprocess
(``python -m trainer.adapter_transfer check|merge ...``): the API side never imports the ML stack.
A rejected adapter exits with status 3 and one ``error: ...`` line per problem on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LEGACY_WEIGHTS = "adapter_model.bin"
REJECTED_EXIT = 3  # not 2, which argparse uses for bad arguments
MAX_LISTED = 5
# What vLLM's LoRA loader accepts (vllm/lora/peft_helper.py), as config key -> why not.
UNSERVABLE_FLAGS = {
    "use_dora": "use_dora is set: vLLM cannot serve DoRA adapters",
    "lora_bias": "lora_bias is set: vLLM cannot serve LoRA bias weights",
    "layer_replication": "layer_replication is set: vLLM cannot serve replicated layers",
    "alora_invocation_tokens": "alora_invocation_tokens is set: vLLM cannot serve Activated LoRA",
    "use_bdlora": "use_bdlora is set: vLLM cannot serve block-diagonal LoRA",
    "use_qalora": "use_qalora is set: vLLM cannot serve QALoRA",
}
# Initialisations that only set the first adapter weights; the others change the base model.
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
_LORA_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")


class AdapterRejectedError(Exception):
    """The adapter cannot be served on this base model; ``problems`` say why, one per line."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            shown.append(f"... and {len(problems) - MAX_LISTED} more")
        super().__init__("\n".join(shown))
        self.problems = shown


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise AdapterRejectedError([f"{folder} has no {CONFIG}: it is not a PEFT adapter folder"])
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterRejectedError([f"{path} is not readable JSON: {exc}"]) from exc
    if not isinstance(config, dict):
        raise AdapterRejectedError([f"{path} is not a JSON object"])
    return config


def config_problems(config: dict[str, Any], max_rank: int) -> list[str]:
    """What in ``adapter_config.json`` keeps vLLM from serving the adapter."""
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(
            f"peft_type is {config.get('peft_type')!r}: only LoRA adapters can be served"
        )
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        problems.append(f"task_type is {config['task_type']!r}: only CAUSAL_LM adapters are served")
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and r > 0 for r in ranks):
        problems.append(f"the LoRA rank r (and rank_pattern) must be positive integers: {ranks}")
    elif max(ranks) > max_rank:
        problems.append(
            f"LoRA rank {max(ranks)} is above {max_rank}, the largest rank vLLM is started with "
            "(OPENFT_VLLM_MAX_LORA_RANK)"
        )
    if config.get("modules_to_save"):
        problems.append(
            f"modules_to_save is {config['modules_to_save']}: vLLM serves LoRA weights only, not "
            "fully trained modules"
        )
    if config.get("bias", "none") != "none":
        problems.append(f"bias is {config['bias']!r}: vLLM serves adapters with bias 'none' only")
    problems += [why for key, why in UNSERVABLE_FLAGS.items() if config.get(key)]
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        problems.append(
            f"init_lora_weights is {init!r}: that initialisation changes the base model's weights, "
            "which vLLM does not do"
        )
    return problems


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    import torch
    from safetensors.torch import load_file

    if (folder / WEIGHTS).is_file():
        return load_file(str(folder / WEIGHTS))
    if (folder / LEGACY_WEIGHTS).is_file():
        loaded = torch.load(folder / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
        return {key: tensor.contiguous() for key, tensor in loaded.items()}
    raise AdapterRejectedError([f"{folder} has neither {WEIGHTS} nor {LEGACY_WEIGHTS}"])


def linear_layers(base_path: str) -> dict[str, tuple[int, int]]:
    """The base model's linear layers by name, with (out, in) features; no weights are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_path))
    return {
        name: (module.out_features, module.in_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def weight_problems(
    config: dict[str, Any], weights: dict[str, torch.Tensor], layers: dict[str, tuple[int, int]]
) -> list[str]:
    """Tensors that are not LoRA weights of this base model's linear layers, or misshapen."""
    problems = _target_problems(config.get("target_modules"), layers)
    if not weights:
        problems.append("the adapter has no weights")
    for key, tensor in sorted(weights.items()):
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            problems.append(f"tensor {key} is not a LoRA A/B weight: vLLM cannot serve it")
            continue
        shape = layers.get(match["module"])
        if shape is None:
            problems.append(
                f"{match['module']} is not a linear layer of the base model: is the adapter made "
                "for another base model?"
            )
        elif not _fits(match["part"], tuple(tensor.shape), shape):
            problems.append(
                f"{key} has shape {list(tensor.shape)}, which does not fit the base model's "
                f"{match['module']} ({shape[1]} in, {shape[0]} out)"
            )
        elif not bool(tensor.float().isfinite().all()):
            problems.append(f"{key} holds values that are not finite numbers")
    return problems


def _fits(part: str, shape: tuple[int, ...], layer: tuple[int, int]) -> bool:
    out_features, in_features = layer
    if len(shape) != 2:
        return False
    return shape[1] == in_features if part == "A" else shape[0] == out_features


def _target_problems(targets: Any, layers: dict[str, tuple[int, int]]) -> list[str]:
    if isinstance(targets, str):
        if targets == "all-linear" or any(re.fullmatch(targets, name) for name in layers):
            return []
        return [f"target_modules {targets!r} matches no linear layer of the base model"]
    if not isinstance(targets, list) or not targets:
        return [f"target_modules is {targets!r}: a list of the base model's layer names is needed"]
    missing = [
        t for t in targets if not any(name == t or name.endswith(f".{t}") for name in layers)
    ]
    if missing:
        return [f"target_modules {missing} are not linear layers of the base model"]
    return []


def check(adapter: Path, base_path: str, max_rank: int, output: Path) -> None:
    """Check ``adapter`` against the base model and write the copy OpenFT stores into ``output``
    (its config, pointing at ``base_path``, and its weights as safetensors)."""
    from safetensors.torch import save_file

    config = read_config(adapter)
    problems = config_problems(config, max_rank)
    if problems:
        raise AdapterRejectedError(problems)
    weights = load_weights(adapter)
    problems = weight_problems(config, weights, linear_layers(base_path))
    if problems:
        raise AdapterRejectedError(problems)
    output.mkdir(parents=True, exist_ok=True)
    stored = {**config, "base_model_name_or_path": base_path, "inference_mode": True}
    (output / CONFIG).write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    save_file(weights, str(output / WEIGHTS), metadata={"format": "pt"})


def merge(adapter: Path, base_path: str, output: Path) -> None:
    """The base model with the adapter folded into its weights, and the base's tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(output))
    AutoTokenizer.from_pretrained(base_path).save_pretrained(str(output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or merge a PEFT LoRA adapter.")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="Check an adapter and write OpenFT's copy.")
    checking.add_argument("--max-rank", type=int, required=True)
    merging = commands.add_parser("merge", help="Merge an adapter into the base's weights.")
    for sub in (checking, merging):
        sub.add_argument("--adapter", type=Path, required=True)
        sub.add_argument("--base-path", required=True)
        sub.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check(args.adapter, args.base_path, args.max_rank, args.output)
        else:
            merge(args.adapter, args.base_path, args.output)
    except AdapterRejectedError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return REJECTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
