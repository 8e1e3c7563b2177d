"""trainer.fused_lora: the fused LoRA layers compute what peft's do, forward and backward."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.fused_lora import FusedLoraLinear, fuse_lora_layers
from trainer.packed_weights import PackedLinear, pack_frozen_linears


def lora_model(dropout: float = 0.0) -> torch.nn.Module:
    """A two-layer Llama with biased attention projections, LoRA on every linear layer and
    adapter weights that are not zero (B starts at zero in peft, which would hide B's term)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout)
    model = get_peft_model(LlamaForCausalLM(config), lora)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    return model


def fused_copy(model: torch.nn.Module, packed: bool) -> torch.nn.Module:
    """``model`` with fused LoRA layers, and with its frozen weights packed (every LoRA base
    layer and the vocabulary projection) if ``packed``."""
    fused = copy.deepcopy(model)
    assert fuse_lora_layers(fused) == 2 * 7  # q, k, v, o, gate, up, down in each layer
    if packed:
        assert pack_frozen_linears(fused, available=1 << 40) == 2 * 7 + 1
        assert type(fused.get_base_model().lm_head) is PackedLinear
    return fused


def loss_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.tensor([[5, 9, 33, 2, 71, 8, 40], [6, 12, 90, 3, 0, 0, 0]])
    attention = (torch.arange(7) < torch.tensor([[7], [4]])).long()
    labels = ids.masked_fill(attention == 0, -100)
    loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def fused_calls(model: torch.nn.Module) -> list[str]:
    """The autograd node of each LoRA layer's output in one forward pass."""
    seen: list[str] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(type(out.grad_fn).__name__))
        for m in model.modules()
        if isinstance(m, FusedLoraLinear)
    ]
    with torch.enable_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_fused_layers_give_peft_s_loss_and_gradients_through_their_own_function(
    packed: bool,
) -> None:
    peft_model = lora_model()
    fused = fused_copy(peft_model, packed)
    expected_loss, expected = loss_and_grads(peft_model)
    loss, grads = loss_and_grads(fused)
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected.keys()
    assert any("lora_B" in name for name in grads)
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-6)
    assert set(fused_calls(fused)) == {"_LoraLinearFunctionBackward"}
    assert fused.state_dict().keys() == peft_model.state_dict().keys()


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_disabled_merged_or_dropped_out_adapters_take_peft_s_own_forward(packed: bool) -> None:
    peft_model = lora_model()
    fused = fused_copy(peft_model, packed)
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        adapted = fused(input_ids=ids).logits
        with fused.disable_adapter():  # DPO's and RFT's reference passes
            assert "_LoraLinearFunctionBackward" not in fused_calls(fused)
            plain = fused(input_ids=ids).logits
        assert not torch.allclose(adapted, plain)
        with peft_model.disable_adapter():
            torch.testing.assert_close(plain, peft_model(input_ids=ids).logits)
        fused.merge_adapter()
        assert "_LoraLinearFunctionBackward" not in fused_calls(fused)
        torch.testing.assert_close(fused(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
        fused.unmerge_adapter()
    dropping = lora_model(dropout=0.5)
    fuse_lora_layers(dropping)
    assert "_LoraLinearFunctionBackward" not in fused_calls(dropping)


def test_the_base_layers_of_peft_s_own_lora_layers_are_not_packed() -> None:
    model = lora_model()  # peft's layers merge into their base through .data, unseen by packs
    assert pack_frozen_linears(model, available=1 << 40) == 1  # the vocabulary projection only
    assert not any(type(m) is PackedLinear for m in model.modules() if hasattr(m, "base_layer"))


def test_inputs_of_another_dtype_than_the_adapter_take_peft_s_forward() -> None:
    fused = lora_model()
    fuse_lora_layers(fused)
    layer = next(m for m in fused.modules() if isinstance(m, FusedLoraLinear))
    x = torch.randn(2, 3, layer.in_features)
    assert layer._fused_adapter(x) is not None
    assert layer._fused_adapter(x.to(torch.bfloat16)) is None


def attention_and_mlp(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    layer = model.get_base_model().model.layers[0]
    return layer.self_attn, layer.mlp


def test_layers_reading_one_input_are_one_autograd_node() -> None:
    fused = fused_copy(lora_model(), packed=True)
    attention, mlp = attention_and_mlp(fused)
    nodes: dict[str, object] = {}

    def record(name: str) -> Any:
        return lambda _module, _input, out: nodes.update({name: out.grad_fn}) or None

    hooks = [
        module.register_forward_hook(record(name.split(".")[-1]))
        for name, module in fused.named_modules()
        if name.startswith("base_model.model.model.layers.0.") and name.endswith("_proj")
    ]
    fused(input_ids=torch.tensor([[1, 2, 3]]))
    for hook in hooks:
        hook.remove()
    node = nodes
    assert node["q_proj"] is node["k_proj"] is node["v_proj"]
    assert node["gate_proj"] is node["up_proj"]
    assert len({id(n) for n in node.values()}) == 4  # qkv, o, gate+up, down
    assert attention.k_proj._stashed is None and mlp.up_proj._stashed is None  # all taken


def test_a_sibling_called_on_another_input_or_after_its_adapter_changed_computes_its_own() -> None:
    peft_model = lora_model()
    fused = fused_copy(peft_model, packed=True)
    attention, _ = attention_and_mlp(fused)
    plain, _ = attention_and_mlp(peft_model)
    x, other = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    with torch.no_grad():
        attention.q_proj(x)
        torch.testing.assert_close(attention.k_proj(other), plain.k_proj(other))
        attention.q_proj(x)
        for model in (attention, plain):
            model.v_proj.lora_B["default"].weight.mul_(3)  # as an optimizer step does
        torch.testing.assert_close(attention.v_proj(x), plain.v_proj(x))
        attention.q_proj(x)  # without gradients
    assert attention.k_proj(x).requires_grad  # not the output computed without them
