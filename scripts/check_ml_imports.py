"""Import check run after installing the ML stack: fail fast on a broken environment."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accel", choices=["cpu", "cuda"], default="cpu")
    accel = parser.parse_args().accel
    addons = ("torchvision", "torchaudio", "torchcodec")
    leftovers = [name for name in addons if importlib.util.find_spec(name)]
    if leftovers and accel == "cpu":
        print(f"check: remove {leftovers}: they break transformers next to this torch")
        return 1
    versions = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "vllm"):
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    import torch

    if accel == "cpu" and torch.version.cuda is not None:
        print(f"check: expected the CPU build of torch, got CUDA {torch.version.cuda}")
        return 1
    if accel == "cuda" and torch.version.cuda is None:
        print(f"check: expected a CUDA build of torch, got {torch.__version__}")
        return 1
    if accel == "cpu":  # a CUDA image is built without a GPU: its server starts on one
        importlib.import_module("vllm.entrypoints.openai.api_server")
    print("ML stack OK:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
