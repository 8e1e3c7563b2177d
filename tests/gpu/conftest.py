"""The GPU tier (`make test-gpu`): CUDA training and the CUDA build of vLLM, on the small demo
model (Qwen2.5-0.5B's decoder, random weights, built here offline).

Not part of `make test` (pyproject's testpaths leave this folder out): it needs an NVIDIA GPU,
and without one it fails at once rather than skipping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.settings import BaseModelConfig
from trainer.demo_model import create_demo_model


def pytest_configure(config: pytest.Config) -> None:
    if not torch.cuda.is_available():
        raise pytest.UsageError(
            f"tests/gpu needs a CUDA GPU; this torch ({torch.__version__}) sees none"
        )


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> BaseModelConfig:
    """The small demo model, built once per run (about a minute on 16 cores)."""
    folder = create_demo_model(tmp_path_factory.mktemp("models") / "small-chat", size="small")
    return BaseModelConfig(
        name="small-chat",
        path=str(folder),
        reference_file=str(Path(folder) / "openft-reference.jsonl"),
        forgetting_warn_relative_increase=0.005,  # its reference set is its own samples
    )
