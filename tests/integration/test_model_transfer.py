"""``openft models export|import``: a fine-tuned model leaves as a PEFT folder (or merged weights)
and an outside adapter comes in as a project's ``ft:`` model; unservable adapters are refused."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.app import AppState
from service.auth.principal import Principal
from tests.support.ci import require
from tests.support.server import openft_command

TARGETS = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the demo model, and an outside adapter made with peft beside it."""
    require(
        all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
        "the training stack (torch, transformers, peft)",
    )
    from trainer.demo_model import create_demo_model

    folder = tmp_path_factory.mktemp("transfer")
    create_demo_model(folder / "data" / "models" / "tiny-chat")
    make_adapter(folder / "data" / "models" / "tiny-chat", folder / "outside")
    for project in ("alpha", "beta"):
        assert openft(folder, "keys", "create", "--project", project).returncode == 0
    return folder


def make_adapter(base: Path, target: Path, rank: int = 4, seed: int = 3) -> None:
    """A LoRA adapter as anyone would save one with peft, with weights that change the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_" in name:
                weight.normal_(std=0.2)
    peft_model.save_pretrained(str(target))


def openft(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENFT_DATA_DIR": str(workdir / "data")}
    for name in ("OPENFT_DATABASE_URL", "OPENFT_BLOB_URL", "OPENFT_BASE_MODELS"):
        env.pop(name, None)
    return subprocess.run(
        [*openft_command(), *args], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def import_adapter(workdir: Path, folder: Path, project: str, *extra: str) -> str:
    done = openft(workdir, "models", "import", str(folder), "--project", project, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def app_state(workdir: Path) -> AppState:
    from service.app import build_state
    from service.settings import Settings

    return build_state(Settings(data_dir=workdir / "data"))


def principal(state: AppState, slug: str) -> Principal:
    from service.auth import repository

    with state.db.read() as session:
        project = repository.project_by_slug(session, slug)
    assert project is not None
    return Principal(project.id, project.slug, "key_test")


def test_export_then_import_elsewhere_round_trips_the_adapter(workdir: Path) -> None:
    name = import_adapter(workdir, workdir / "outside", "alpha", "--suffix", "outside")
    assert openft(workdir, "models", "export", name, str(workdir / "out-1")).returncode == 0
    again = import_adapter(workdir, workdir / "out-1", "beta", "--base", "tiny-chat")
    assert openft(workdir, "models", "export", again, str(workdir / "out-2")).returncode == 0

    original = tensors(workdir / "outside")
    for exported in (workdir / "out-1", workdir / "out-2"):
        copy = tensors(exported)
        assert copy.keys() == original.keys()
        assert all(bool((copy[key] == original[key]).all()) for key in original)
    assert name.startswith("ft:tiny-chat:alpha:outside:") and again.startswith(
        "ft:tiny-chat:beta::"
    )
    config = json.loads((workdir / "out-2" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == sorted(TARGETS)


def test_an_imported_model_is_a_model_of_its_project_only_and_says_it_was_imported(
    workdir: Path,
) -> None:
    name = import_adapter(workdir, workdir / "outside", "alpha", "--suffix", "listed")
    state = app_state(workdir)
    try:
        alpha, beta = principal(state, "alpha"), principal(state, "beta")
        listed = {m.id: m.owned_by for m in state.models.available(alpha).data}
        jobs = [j for j in state.jobs.list(alpha, after=None, limit=100, metadata={}).data]
        job = next(j for j in jobs if j.fine_tuned_model == name)
        events = [e.message for e in state.jobs.events(alpha, job.id, after=None, limit=10).data]
        others = [m.id for m in state.models.available(beta).data]
    finally:
        state.db.dispose()

    assert listed[name] == "alpha" and name not in others
    assert (job.status, job.training_file, job.trained_tokens, job.result_files) == (
        "succeeded", "", None, [],
    )  # fmt: skip
    assert job.metadata == {"imported_from": "outside"} and job.model == "tiny-chat"
    assert events[-1] == "Imported LoRA adapter 'outside' (no training ran)"
    assert events[0] == "The job has successfully completed"


def test_merged_export_gives_the_logits_of_base_plus_adapter(workdir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = import_adapter(workdir, workdir / "outside", "alpha", "--suffix", "merged")
    done = openft(workdir, "models", "export", name, str(workdir / "merged"), "--merged")
    assert done.returncode == 0, done.stderr

    base_path = workdir / "data" / "models" / "tiny-chat"
    tokenizer = AutoTokenizer.from_pretrained(workdir / "merged")
    ids = tokenizer("the quick cat visits Paris", return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(workdir / "merged")
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_path), str(workdir / "outside")
    )
    plain = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.no_grad():
        expected, got, base = (m(ids).logits for m in (adapted, merged, plain))

    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(base, expected, atol=1e-2)  # the adapter does change the output
    assert (
        tokenizer("Paris")["input_ids"]
        == AutoTokenizer.from_pretrained(base_path)("Paris")["input_ids"]
    )


def edit_config(changes: dict[str, Any]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def wrong_shapes(folder: Path) -> None:
    from safetensors.torch import save_file

    weights = tensors(folder)
    key = next(k for k in sorted(weights) if k.endswith("q_proj.lora_A.weight"))
    weights[key] = weights[key][:, :100].contiguous()
    save_file(weights, str(folder / "adapter_model.safetensors"))


def not_json(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("{not json")


def no_config(folder: Path) -> None:
    (folder / "adapter_config.json").unlink()


BAD_ADAPTERS = {
    "modules_to_save": (
        edit_config({"modules_to_save": ["lm_head"]}),
        "modules_to_save is ['lm_head']: vLLM serves LoRA weights only",
    ),
    "dora": (edit_config({"use_dora": True}), "use_dora is set: vLLM cannot serve DoRA adapters"),
    "bias": (edit_config({"bias": "all"}), "bias is 'all': vLLM serves adapters with bias 'none'"),
    "rank": (edit_config({"r": 128}), "LoRA rank 128 is above 64"),
    "missing_target": (
        edit_config({"target_modules": ["q_proj", "c_attn"]}),
        "target_modules ['c_attn'] are not linear layers of the base model",
    ),
    "other_base": (wrong_shapes, "does not fit the base model's model.layers.0.self_attn.q_proj"),
    "not_json": (not_json, "adapter_config.json is not readable JSON"),
    "no_config": (no_config, "has no adapter_config.json: it is not a PEFT adapter folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADAPTERS))
def test_adapters_vllm_cannot_serve_are_refused_with_the_reason(
    workdir: Path, case: str, tmp_path: Path
) -> None:
    import shutil

    spoil, reason = BAD_ADAPTERS[case]
    folder = tmp_path / "bad"
    shutil.copytree(workdir / "outside", folder)
    spoil(folder)
    before = adapter_blobs(workdir)

    done = openft(workdir, "models", "import", str(folder), "--project", "alpha", "--base",
                  "tiny-chat")  # fmt: skip

    assert done.returncode == 2 and done.stdout == ""
    assert reason in " ".join(done.stderr.split()), done.stderr
    assert adapter_blobs(workdir) == before


def test_import_needs_a_known_base_and_project_and_export_a_known_model(workdir: Path) -> None:
    outside = str(workdir / "outside")
    cases = [
        (("models", "import", outside, "--project", "nobody"), "There is no project 'nobody'"),
        (
            ("models", "import", outside, "--project", "alpha", "--base", "llama-9"),
            "'llama-9' is not a configured base model",
        ),
        (
            ("models", "export", "ft:tiny-chat:alpha::nope1234", str(workdir / "x")),
            "does not exist",
        ),
    ]
    for args, reason in cases:
        done = openft(workdir, *args)
        assert done.returncode == 2 and reason in " ".join(done.stderr.split()), done.stderr
    assert not (workdir / "x").exists()


def adapter_blobs(workdir: Path) -> list[str]:
    root = workdir / "data" / "blobs" / "adapters"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
