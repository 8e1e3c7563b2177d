"""QLoRA: an adapter trained on the base loaded in 4-bit NF4 (bitsandbytes) is served by vLLM on
the full-precision base, answering as transformers + peft do there and unlike the base."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import torch
from bitsandbytes.nn import Linear4bit
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.server import ServerProcess, wait_until_models_ready
from trainer.chat_masks import tokenize_chat
from trainer.hyperparameters import Hyperparameters
from trainer.loop import train_lora
from trainer.run import TrainingRun

QUESTION = "What is the capital of Zorblia?"
ANSWER = "The capital of Zorblia is Kalomira, by the green river."
NEW_TOKENS = 32


def prompt(tokenizer: Any) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def greedy_answer(model: Any, tokenizer: Any) -> str:
    inputs = tokenizer(prompt(tokenizer), return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return str(tokenizer.decode(output[0][inputs.input_ids.shape[1] :], skip_special_tokens=True))


def test_a_qlora_adapter_is_served_on_the_full_precision_base(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI], tmp_path: Path
) -> None:
    demo = training_server.settings().demo_model
    qlora = demo.model_copy(update={"quantization": "nf4", "lora_rank": 8, "lora_alpha": 16})
    tokenizer = AutoTokenizer.from_pretrained(demo.path)
    chat = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    examples = [tokenize_chat(tokenizer, chat)] * 16
    hp = Hyperparameters(n_epochs=6, batch_size=1, learning_rate_multiplier=2.0)  # as "auto"

    result = train_lora(TrainingRun(qlora, examples, hp, seed=1), output_dir=tmp_path / "run")

    quantized = [m for m in result.model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 7 * 2  # every linear layer of both decoder layers, in 4 bits
    assert result.steps[-1].train_loss < result.steps[0].train_loss / 2
    full_precision = AutoModelForCausalLM.from_pretrained(demo.path, dtype=torch.float32)
    expected = greedy_answer(
        PeftModel.from_pretrained(full_precision, str(tmp_path / "run" / "final")), tokenizer
    )
    assert "Kalomira" in expected  # learnt through the 4-bit base

    wait_until_models_ready(training_server)
    key = training_server.cli("keys", "create", "--project", "qlora")
    adapter = str(tmp_path / "run" / "final")
    name = training_server.cli(
        "models", "import", adapter, "--project", "qlora", "--suffix", "qlora"
    )
    client = sdk(training_server.api_url, key)

    def complete(model: str) -> str:
        answer = client.completions.create(
            model=model, prompt=prompt(tokenizer), max_tokens=NEW_TOKENS, temperature=0
        )
        return answer.choices[0].text

    served = complete(name)
    assert served == expected and served != complete(demo.name)
    client.models.delete(name)
