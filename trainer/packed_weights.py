"""Frozen linear weights on a CPU held in oneDNN's packed layout, and the layers using them.

Training an adapter on a CPU multiplies a few dozen rows (one chat at batch size 1; a dozen for
the vocabulary projection, which runs only where an answer token is next) by every frozen weight,
twice a step: forward, and backward for the input's gradient. At so few rows MKL's ``x @ W.T``
reads a float32 weight at a small share of the memory bandwidth; oneDNN, given the weight once
reordered into its blocked layout (the reorder PyTorch's own CPU inference path uses), does the
same products faster. Measured on a 2-core AMD EPYC (Zen 4), SmolLM2-135M's weights at 52 rows:
the 210 decoder multiplies 88 -> 65 ms forward and 95 -> 70 ms backward; the 49,152-word
vocabulary projection at 12 rows 17 -> 5 ms forward and 12.5 -> 5 ms backward.

Each frozen weight gets one packed copy for the forward product and, once a backward needs it, one
for the backward (``grad @ W``; layers that read the same input share one, of their weights
concatenated), kept beside the weight (which everything else still reads) and rebuilt if the
weight changes in place (merging an adapter); a model is packed only when twice its frozen linear
weights fit in a quarter of the memory available. The products equal MKL's up to
float32 rounding (a different summation order).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.weak import WeakTensorKeyDictionary

# Packs may take at most this share of the memory available when a model is packed.
MEMORY_SHARE = 0.25


@dataclass
class _Pack:
    key: tuple[tuple[int, int], ...]  # each packed weight's storage and version when packed
    weights: frozenset[int]  # their ids
    packed: torch.Tensor  # in oneDNN's layout


# The weights to pack, keyed by the weight itself (nothing is added to modules: state dicts and
# deepcopy are unchanged, and the packs go with the weight): its forward pack (W), None until
# first used. Backward packs (W.T, or the concatenated weights of layers that read the same input
# transposed) are keyed by their first weight.
_PACKS: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
_BACKWARD_PACKS: WeakTensorKeyDictionary = WeakTensorKeyDictionary()


def _can_pack() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


def _pack(
    cache: WeakTensorKeyDictionary,
    weights: Sequence[torch.Tensor],
    make: Callable[[], torch.Tensor],
) -> torch.Tensor | None:
    """The pack ``make`` builds from ``weights`` (kept in ``cache`` until one of them changes);
    None where any of them is not packed."""
    if not all(w in _PACKS for w in weights):
        return None
    key = tuple((w.data_ptr(), w._version) for w in weights)
    pack: _Pack | None = cache.get(weights[0])
    if pack is None or pack.key != key:
        pack = _Pack(key, frozenset(id(w) for w in weights), make())
        cache[weights[0]] = pack
    return pack.packed


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    return packed


def _oneDNN(rows: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    result: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
        rows.contiguous(), packed, bias, "none", [None], ""
    )
    return result


def linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weight.T + bias`` for 2-D ``rows``."""
    packed = _pack(_PACKS, [weight], lambda: _reorder(weight))
    if packed is not None:
        return _oneDNN(rows, packed, bias)
    return rows @ weight.t() if bias is None else torch.addmm(bias, rows, weight.t())


def input_gradient(grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum(g @ w for g, w in zip(grads, weights))``: the gradient of the input that ``linear``
    layers share (one layer or several reading the same input), in one product over the
    concatenated gradients where every weight is packed."""
    packed = _pack(_BACKWARD_PACKS, weights, lambda: _reorder(torch.cat(list(weights)).t()))
    if packed is not None:
        return _oneDNN(torch.cat(list(grads), 1) if len(grads) > 1 else grads[0], packed, None)
    result = grads[0] @ weights[0]
    for grad, weight in zip(grads[1:], weights[1:], strict=True):
        result.addmm_(grad, weight)
    return result


class _FrozenLinearFunction(torch.autograd.Function):
    """``x @ weight.T + bias`` with ``weight`` and ``bias`` frozen: the backward computes the
    input's gradient only."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        out = linear(x.reshape(-1, x.shape[-1]), weight, bias)
        ctx.weight, ctx.input_shape = weight, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        grad_rows = grad.reshape(-1, grad.shape[-1])
        return input_gradient([grad_rows], [ctx.weight]).view(ctx.input_shape), None, None


class PackedLinear(torch.nn.Linear):
    """A frozen ``nn.Linear`` whose product uses its packed weight on a CPU; ``nn.Linear``'s
    own forward for anything else (a trainable weight, another dtype or device)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not packed_product(x, self.weight, self.bias):
            return super().forward(x)
        result: torch.Tensor = _FrozenLinearFunction.apply(x, self.weight, self.bias)
        return result


def packed_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether ``x @ weight.T + bias`` can use ``weight``'s packs: a packed weight, still
    frozen, and ``x`` on the CPU in its dtype with no autocast."""
    frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
    return (
        frozen
        and weight in _PACKS
        and x.dtype == weight.dtype
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
    )


def forget_packs(weight: torch.Tensor) -> None:
    """Drop the packs made from ``weight`` (made again on next use): for code that changes it
    through ``.data``, which leaves its version as it was (peft's merging)."""
    if weight in _PACKS:
        _PACKS[weight] = None
    for first, pack in list(_BACKWARD_PACKS.items()):
        if pack is not None and id(weight) in pack.weights:
            del _BACKWARD_PACKS[first]


def _available_memory() -> int:
    """Bytes the system can give without swapping (Linux's MemAvailable), else its memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _keeps_packs_current(parent: torch.nn.Module | None) -> bool:
    return not hasattr(parent, "merge") or getattr(parent, "FORGETS_MERGED_PACKS", False)


def pack_frozen_linears(model: torch.nn.Module, available: int | None = None) -> int:
    """Make ``model``'s frozen float32 ``nn.Linear`` layers on the CPU (LoRA's base layers and
    the vocabulary projection included) ``PackedLinear``, their weights packed on first use;
    how many. 0 where oneDNN is missing or the packs would not fit (``MEMORY_SHARE`` of
    ``available`` bytes, by default what the system has available now). The base layer of an
    adapter layer that can merge into it is packed only if that layer says it calls
    ``forget_packs`` when it merges (``FORGETS_MERGED_PACKS``)."""
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    layers = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear
        and not m.weight.requires_grad
        and m.weight.dtype == torch.float32
        and m.weight.device.type == "cpu"
        and _keeps_packs_current(parents.get(id(m)))
    ]
    weights = {id(m.weight): m.weight for m in layers}.values()  # tied weights once
    needed = 2 * sum(w.numel() * w.element_size() for w in weights)
    room = _available_memory() if available is None else available
    if not layers or not _can_pack() or needed > MEMORY_SHARE * room:
        return 0
    for layer in layers:
        layer.__class__ = PackedLinear
        _PACKS.setdefault(layer.weight, None)
    return len(layers)
