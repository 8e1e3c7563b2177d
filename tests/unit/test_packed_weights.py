"""trainer.packed_weights: frozen linear layers on packed weights compute what nn.Linear does."""

from __future__ import annotations

import copy

import torch

from trainer import packed_weights
from trainer.packed_weights import PackedLinear, pack_frozen_linears

PLENTY = 1 << 40  # bytes "available": room for any packs


def frozen_layers() -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 200), torch.nn.Linear(200, 30, bias=False))
    model.requires_grad_(False)
    return model


def output_and_input_grad(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    assert x.grad is not None
    return out.detach(), x.grad


def test_packed_layers_give_nn_linear_s_products_and_input_gradients() -> None:
    plain = frozen_layers()
    packed = copy.deepcopy(plain)
    assert pack_frozen_linears(packed, available=PLENTY) == 2
    assert all(type(layer) is PackedLinear for layer in packed)
    expected_out, expected_grad = output_and_input_grad(plain)
    out, grad = output_and_input_grad(packed)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(grad, expected_grad)
    for layer in packed:  # both products went through the packs
        assert packed_weights._PACKS[layer.weight] is not None
        assert packed_weights._BACKWARD_PACKS[layer.weight] is not None
    assert packed.state_dict().keys() == plain.state_dict().keys()


def test_a_weight_changed_in_place_is_packed_again() -> None:
    layer = frozen_layers()[0]
    pack_frozen_linears(layer, available=PLENTY)
    x = torch.randn(5, 48)
    layer(x)
    with torch.no_grad():
        layer.weight.mul_(-2)  # as merging an adapter into its base does
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_trainable_or_half_precision_layers_and_a_short_memory_are_left_as_they_are() -> None:
    model = frozen_layers()
    model[0].requires_grad_(True)
    model[1].to(torch.bfloat16)
    assert pack_frozen_linears(model, available=PLENTY) == 0
    weight_bytes = 200 * 30 * 4
    model = frozen_layers()
    model[0].requires_grad_(True)
    # two packed copies of the frozen weight must fit in a quarter of what is available
    assert pack_frozen_linears(model, available=8 * weight_bytes - 1) == 0
    assert pack_frozen_linears(model, available=8 * weight_bytes) == 1


def test_a_packed_layer_made_trainable_again_gets_its_weight_s_gradient() -> None:
    layer = frozen_layers()[0]
    pack_frozen_linears(layer, available=PLENTY)
    layer.weight.requires_grad_(True)
    x = torch.randn(3, 48)
    layer(x).sum().backward()
    assert layer.weight.grad is not None
    torch.testing.assert_close(layer.weight.grad, torch.ones(200, 3) @ x)


def test_a_packed_model_copies_and_its_copy_computes_the_same() -> None:
    model = frozen_layers()
    pack_frozen_linears(model, available=PLENTY)
    x = torch.randn(4, 48)
    expected = model(x)
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), expected)


def test_empty_single_row_and_strided_inputs_get_nn_linear_s_results() -> None:
    layer = frozen_layers()[0]
    pack_frozen_linears(layer, available=PLENTY)
    for x in (
        torch.randn(0, 48),
        torch.randn(1, 0, 48),
        torch.randn(1, 48),
        torch.randn(48, 3).t(),
    ):
        x.requires_grad_(True)
        out = layer(x)
        out.sum().backward()
        torch.testing.assert_close(out, torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert x.grad is not None and x.grad.shape == x.shape
        torch.testing.assert_close(x.grad, layer.weight.sum(0).expand_as(x))
