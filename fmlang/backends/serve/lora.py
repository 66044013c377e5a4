"""Batched multi-LoRA (the S-LoRA / Punica idea in plain torch): each targeted `nn.Linear`
is wrapped so that one forward pass serves rows that use different adapters,

    y_i = x_i Wᵀ + scale[s_i] · (x_i A[s_i]ᵀ) B[s_i]ᵀ

where s_i is row i's slot in tensors that stack the resident adapters' A `[slots, r_max, in]`
and B `[slots, out, r_max]` (zero-padded for smaller ranks). Slot −1 means the base model.
Linear heads an adapter replaces (peft `modules_to_save`, e.g. a classifier) get whole
per-slot weights instead."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights
from fmlang.diagnostics import error
from fmlang.errors import StageError


class RowSlots:
    """The per-row slot ids of the forward pass in progress, shared by every wrapped layer."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # [batch] long, −1 = base model
        self.active: bool = False  # any row uses an adapter


def _as_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    if x.shape[0] != rows.shape[0]:
        raise RuntimeError(f"batch of {x.shape[0]} rows but {rows.shape[0]} row slots")
    return x.reshape(x.shape[0], -1, x.shape[-1])


class MultiLoraLinear(nn.Module):
    """A base `nn.Linear` plus stacked LoRA slots, applied per row."""

    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scale: torch.Tensor

    def __init__(self, base: nn.Linear, slots: int, r_max: int, index: RowSlots) -> None:
        super().__init__()
        self.base = base
        self.index = index
        w = base.weight
        self.register_buffer("lora_a", w.new_zeros(slots, r_max, base.in_features))
        self.register_buffer("lora_b", w.new_zeros(slots, base.out_features, r_max))
        self.register_buffer("scale", w.new_zeros(slots))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        rows = self.index.rows
        if rows is None or not self.index.active:
            return y
        picked = rows.clamp(min=0)
        scale = self.scale[picked] * (rows >= 0).to(x.dtype)  # [b]
        x3 = _as_rows(x, rows)
        hidden = torch.bmm(x3, self.lora_a[picked].transpose(1, 2))  # [b, s, r]
        delta = torch.bmm(hidden, self.lora_b[picked].transpose(1, 2))  # [b, s, out]
        return y + (delta * scale[:, None, None]).reshape(y.shape)

    def write(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        rank = a.shape[0]
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.lora_a[slot, :rank].copy_(a)
        self.lora_b[slot, :, :rank].copy_(b)
        self.scale[slot] = scale

    def clear(self, slot: int) -> None:
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.scale[slot] = 0.0


class MultiHeadLinear(nn.Module):
    """A base `nn.Linear` that rows of some slots replace by that adapter's own head."""

    head_weight: torch.Tensor
    head_bias: torch.Tensor
    present: torch.Tensor

    def __init__(self, base: nn.Linear, slots: int, index: RowSlots) -> None:
        super().__init__()
        self.base = base
        self.index = index
        w = base.weight
        self.register_buffer("head_weight", w.new_zeros(slots, base.out_features, base.in_features))
        self.register_buffer("head_bias", w.new_zeros(slots, base.out_features))
        self.register_buffer("present", torch.zeros(slots, dtype=torch.bool, device=w.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        rows = self.index.rows
        if rows is None or not self.index.active:
            return y
        picked = rows.clamp(min=0)
        use = (rows >= 0) & self.present[picked]
        x3 = _as_rows(x, rows)
        own = torch.bmm(x3, self.head_weight[picked].transpose(1, 2))
        own = own + self.head_bias[picked][:, None, :]
        return torch.where(use[:, None, None], own, y.reshape(own.shape)).reshape(y.shape)

    def write(self, slot: int, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.head_weight[slot].copy_(weight)
        if bias is None:
            self.head_bias[slot].zero_()
        else:
            self.head_bias[slot].copy_(bias)
        self.present[slot] = True

    def clear(self, slot: int) -> None:
        self.present[slot] = False


def _linear(model: nn.Module, name: str, spec: AdapterSpec) -> nn.Linear:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if isinstance(module, (MultiLoraLinear, MultiHeadLinear)):
        module = module.base
    if not isinstance(module, nn.Linear):
        raise StageError(
            error(
                "FM1005",
                f"adapter `{spec.name}` targets `{name}`, which is not a linear layer of the "
                "base model",
                help="serve the adapter with the base model it was trained on",
            )
        )
    return module


def _check_shape(spec: AdapterSpec, name: str, layer: nn.Linear, shape: tuple[int, int]) -> None:
    if shape != (layer.out_features, layer.in_features):
        raise StageError(
            error(
                "FM1005",
                f"adapter `{spec.name}` expects `{name}` of shape {shape[0]}×{shape[1]}, the "
                f"base model's is {layer.out_features}×{layer.in_features}",
                help="serve the adapter with the base model it was trained on",
            )
        )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class LoraBank:
    """Installs the multi-LoRA layers every configured adapter needs and writes slots."""

    def __init__(self, model: nn.Module, specs: Mapping[str, AdapterSpec], slots: int) -> None:
        self.slots = slots
        self.index = RowSlots()
        self.lora: dict[str, MultiLoraLinear] = {}
        self.heads: dict[str, MultiHeadLinear] = {}
        ranks = [r for spec in specs.values() for r in spec.ranks.values()]
        r_max = max(ranks, default=1)
        for spec in specs.values():
            self._install(model, spec, r_max)

    def _install(self, model: nn.Module, spec: AdapterSpec, r_max: int) -> None:
        for name, shape in sorted(spec.shapes.items()):
            layer = _linear(model, name, spec)
            _check_shape(spec, name, layer, shape)
            if name not in self.lora:
                self.lora[name] = MultiLoraLinear(layer, self.slots, r_max, self.index)
                _replace(model, name, self.lora[name])
        for name, shape in sorted(spec.heads.items()):
            layer = _linear(model, name, spec)
            _check_shape(spec, name, layer, shape)
            if name not in self.heads:
                self.heads[name] = MultiHeadLinear(layer, self.slots, self.index)
                _replace(model, name, self.heads[name])

    @torch.no_grad()
    def write(self, slot: int, weights: AdapterWeights) -> None:
        """Make `slot` hold `weights`; layers the adapter does not touch get zeros."""
        for name, layer in self.lora.items():
            part = weights.lora.get(name)
            if part is None:
                layer.clear(slot)
            else:
                layer.write(slot, part.a, part.b, part.scale)
        for name, head in self.heads.items():
            own = weights.heads.get(name)
            if own is None:
                head.clear(slot)
            else:
                head.write(slot, *own)

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        for layer in self.lora.values():
            layer.clear(slot)
        for head in self.heads.values():
            head.clear(slot)

    @contextmanager
    def rows(self, slots: list[int], device: torch.device | str = "cpu") -> Iterator[None]:
        """Run the forward passes inside with row i using slot `slots[i]` (−1: base only)."""
        self.index.rows = torch.tensor(slots, dtype=torch.long, device=device)
        self.index.active = any(s >= 0 for s in slots)
        try:
            yield
        finally:
            self.index.rows = None
            self.index.active = False
