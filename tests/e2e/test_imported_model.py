"""An adapter made outside OpenFT, brought in with ``openft models import``, is served by vLLM
through the gateway like a trained one, and answers as transformers + peft would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.server import ServerProcess, wait_until_models_ready

PROMPT = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
NEW_TOKENS = 8


def make_adapter(base: Path, target: Path) -> str:
    """A LoRA adapter saved with peft outside OpenFT; returns its greedy answer to PROMPT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(11)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"])
    model: Any = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_" in name:
                weight.normal_(std=0.2)
    model.save_pretrained(str(target))
    tokenizer = AutoTokenizer.from_pretrained(base)
    inputs = tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return str(tokenizer.decode(output[0][inputs.input_ids.shape[1] :], skip_special_tokens=True))


def test_an_imported_adapter_is_served_through_the_gateway(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI], tmp_path: Path
) -> None:
    wait_until_models_ready(training_server)
    expected = make_adapter(Path(training_server.settings().demo_model.path), tmp_path / "peft")
    key = training_server.cli("keys", "create", "--project", "importers")
    adapter = str(tmp_path / "peft")
    name = training_server.cli(
        "models", "import", adapter, "--project", "importers", "--suffix", "outside"
    )
    client = sdk(training_server.api_url, key)

    def complete(model: str) -> str:
        answer = client.completions.create(
            model=model, prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0
        )
        assert answer.model == model
        return answer.choices[0].text

    assert client.models.retrieve(name).owned_by == "importers"
    served = complete(name)
    assert served == expected and served != complete("tiny-chat")
    client.models.delete(name)
    with pytest.raises(openai.NotFoundError):
        complete(name)
