"""LoRA linear layers computed as one autograd function on a CPU, with the gradients peft's gives.

peft computes a LoRA layer as ``base(x) + lora_B(lora_A(x)) * scaling``: on a CPU at batch size 1
each of the hundreds of layers then runs two matrix multiplies, a scaling and an addition forward,
and the autograd graph holds a node for each of them and for the views between. Here the frozen
base's product and the adapter's are one function: the adapter's term is added into the base's
output by the BLAS call that multiplies it (``addmm_`` with ``alpha=scaling``), and the backward
computes only what training needs (the input's gradient and the two adapter matrices', never the
frozen weight's). On SmolLM2-135M, LoRA r=16 on every linear layer, a 52-token step took 291 ms
with peft's layers and 277 ms with these, with the same loss and gradients.

Only the plain case takes this path (one active adapter, no dropout, no DoRA or other variant, a
frozen ``nn.Linear`` base, everything on the CPU in one dtype); anything else, and adapters that
are disabled or merged (DPO's reference passes), goes through peft's own forward. The frozen
products use the base's packed weight where ``trainer.packed_weights`` packed it.

Layers that read the same input (a decoder layer's q, k and v projections; its gate and up
projections: ``SIBLINGS``) are one function: the first one called computes the others' outputs
too and leaves each with its layer until that layer is called with the same input (unchanged, the
adapter unchanged, gradients on or off as then). Their backward is one autograd node, so the
input's gradient through their frozen weights is one product over the concatenated gradients:
on SmolLM2 a 52-token step 394 -> 374 ms (median, the two alternating in one process), the same
gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear

from trainer.packed_weights import PackedLinear, forget_packs, input_gradient, linear

# LoRA layers that read the same input in the decoders trained here (Llama, Qwen2, Mistral, ...),
# by their names in the same parent module: computed as one function (gate and up's backward
# product on SmolLM2 at 52 rows: 53 -> 35 ms a step).
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _LoraLinearFunction(torch.autograd.Function):
    """For each layer i of a group reading ``x``: ``x @ weight_i.T + bias_i + scaling_i *
    (x @ a_i.T) @ b_i.T``, weights and biases frozen; ``layers`` is (weight, bias, a, b) for
    each in turn."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scalings: tuple[float, ...], *layers: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        rows = x.reshape(-1, x.shape[-1])
        outputs, saved = [], [rows]
        for i, scaling in enumerate(scalings):
            weight, bias, lora_a, lora_b = layers[4 * i : 4 * i + 4]
            assert weight is not None and lora_a is not None and lora_b is not None
            down = rows @ lora_a.t()
            out = linear(rows, weight, bias)
            out.addmm_(down, lora_b.t(), alpha=scaling)
            outputs.append(out.view(*x.shape[:-1], out.shape[-1]))
            saved += [down, weight, lora_a, lora_b]
        ctx.save_for_backward(*saved)
        ctx.scalings, ctx.input_shape = scalings, x.shape
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, *saved = ctx.saved_tensors
        grad_outs, weights, adapter_terms = [], [], []
        layer_grads: list[torch.Tensor | None] = []
        for i, (grad, scaling) in enumerate(zip(grads, ctx.scalings, strict=True)):
            down, weight, lora_a, lora_b = saved[4 * i : 4 * i + 4]
            grad_out = grad.reshape(-1, grad.shape[-1])
            grad_down = (grad_out @ lora_b).mul_(scaling)
            needs_a, needs_b = ctx.needs_input_grad[4 + 4 * i : 6 + 4 * i]
            grad_a = grad_down.t() @ rows if needs_a else None
            grad_b = (grad_out.t() @ down).mul_(scaling) if needs_b else None
            layer_grads += [None, None, grad_a, grad_b]
            grad_outs.append(grad_out)
            weights.append(weight)
            adapter_terms.append((grad_down, lora_a))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = input_gradient(grad_outs, weights)
            for grad_down, lora_a in adapter_terms:
                grad_x.addmm_(grad_down, lora_a)
            grad_x = grad_x.view(ctx.input_shape)
        return grad_x, None, *layer_grads


class FusedLoraLinear(LoraLinear):
    """peft's LoRA ``Linear`` whose plain case is ``_LoraLinearFunction``; the same module
    otherwise (weights, state dict, merging, saving)."""

    # Merging changes the base weight through ``.data``: its packs are dropped (packed_weights).
    FORGETS_MERGED_PACKS = True

    def merge(self, *args: Any, **kwargs: Any) -> None:
        super().merge(*args, **kwargs)
        self._forget_base_packs()

    def unmerge(self) -> None:
        super().unmerge()
        self._forget_base_packs()

    def _forget_base_packs(self) -> None:
        weight = self.get_base_layer().weight
        assert isinstance(weight, torch.Tensor)
        forget_packs(weight)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if args or kwargs else self._fused_adapter(x)
        if adapter is None:
            result: torch.Tensor = super().forward(x, *args, **kwargs)
            return result
        stashed, self._stashed = self._stashed, None
        if stashed is not None and stashed[0] is x and stashed[1] == self._stash_key(x, adapter):
            output: torch.Tensor = stashed[2]
            return output
        group = [(self, adapter)]
        for sibling in self._siblings:
            sibling_adapter = sibling._fused_adapter(x)
            if sibling_adapter is not None:
                group.append((sibling, sibling_adapter))
        inputs: list[Any] = []
        for layer, name in group:
            base = layer.base_layer
            inputs += [base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight]
        scalings = tuple(layer.scaling[name] for layer, name in group)
        outputs: tuple[torch.Tensor, ...] = _LoraLinearFunction.apply(x, scalings, *inputs)
        for (layer, name), out in zip(group[1:], outputs[1:], strict=True):
            layer._stashed = (x, layer._stash_key(x, name), out)
        return outputs[0]

    # Set by ``fuse_lora_layers``: the layers reading this one's input (``SIBLINGS``), and the
    # output one of them computed for this layer (input, ``_stash_key``, output) until it is used.
    _siblings: tuple[FusedLoraLinear, ...] = ()
    _stashed: tuple[torch.Tensor, tuple[Any, ...], torch.Tensor] | None = None

    def _stash_key(self, x: torch.Tensor, adapter: str) -> tuple[Any, ...]:
        """What a stashed output was computed from, besides the input tensor itself."""
        lora_a, lora_b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        grad = torch.is_grad_enabled()
        return (x._version, adapter, lora_a._version, lora_b._version, grad)

    def _fused_adapter(self, x: torch.Tensor) -> str | None:
        """The one adapter the fused function computes on ``x``, or None where peft's forward
        is needed."""
        if self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        adapter: str = self.active_adapters[0]
        if (
            adapter not in self.lora_A
            or adapter in self.lora_variant
            or not isinstance(self.lora_dropout[adapter], torch.nn.Identity)
            or self.lora_B[adapter].bias is not None
        ):
            return None
        base = self.base_layer
        frozen = [p for p in (base.weight, base.bias) if p is not None]
        plain_base = type(base) in (torch.nn.Linear, PackedLinear)
        if not plain_base or any(p.requires_grad for p in frozen):
            return None
        weights = (base.weight, self.lora_A[adapter].weight, self.lora_B[adapter].weight)
        if x.device.type != "cpu" or any(w.dtype != x.dtype for w in weights):
            return None
        return adapter


def fuse_lora_layers(model: torch.nn.Module) -> int:
    """Make ``model``'s LoRA linear layers ``FusedLoraLinear`` (in place, weights untouched),
    siblings (``SIBLINGS``) knowing each other; how many there were."""
    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = FusedLoraLinear
            count += 1
    for parent in model.modules():
        children = dict(parent.named_children())
        for names in SIBLINGS:
            group = [children[n] for n in names if type(children.get(n)) is FusedLoraLinear]
            for layer in group:
                siblings = tuple(other for other in group if other is not layer)
                object.__setattr__(layer, "_siblings", siblings)
    return count
