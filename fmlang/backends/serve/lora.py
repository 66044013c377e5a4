"""Batched multi-LoRA (the S-LoRA / Punica idea in plain torch): each targeted `nn.Linear`
is wrapped so that one forward pass serves rows that use different adapters, or a weighted
mixture of several,

    y_i = x_i Wᵀ + Σ_k w_ik · scale[s_ik] · (x_i A[s_ik]ᵀ) B[s_ik]ᵀ

where s_ik are row i's slots in tensors that stack the resident adapters' A `[slots, r_max,
in]` and B `[slots, out, r_max]` (zero-padded for smaller ranks; B holds `scale · B`, so the
scale costs nothing per row) and w_ik the row's weights (1 for a plain adapter request). A
row without slots is the base model. A mixture of deltas `Σ_k w_k scale_k B_k A_k` is exactly
what peft's `add_weighted_adapter(combination_type="cat")` builds: the ranks concatenated.

Every forward pass shares its (row, slot, weight) entries (`_Entries`, read by every
wrapped layer). Each layer takes the entries whose slot holds weights for it, gathers A
and B per entry and runs two batched matmuls, adding the result in place into the base
output only on those rows: base-model rows, and rows whose adapter does not target the
layer, cost it nothing. Against the alternatives on CPU (one matmul per
distinct slot, torch's grouped_mm over slot segments, one dense matmul over every slot), the
gathered bmm was fastest or within noise in most layer shapes and in whole-model forward
passes; grouped_mm won only for the widest layers in isolation, and lost in the whole
model (`benchmarks/serve_throughput.py --profile-lora` prints the per-layer comparison).

The gather itself (a copy of every entry's A and B) cost more than the LoRA matmuls, so
each layer keeps what it gathered for its last plan and reuses it while the plan's slots
and those slots' weights (`RowSlots.written`, stamped by every slot write) are unchanged:
consecutive decode steps of an unchanged batch gather nothing. The kept copies are bounded
by `RowSlots.gather_budget` bytes over all layers; past it a layer gathers every pass. A
and B are stored as `[slots, in, r_max]` and `[slots, r_max, out]`, the layouts bmm reads
without a transpose.

A decode step's LoRA kernels are small (a few hundred per step, about 1M multiply-adds
each on the 58M Llama), and under `fmc serve`'s OMP_WAIT_POLICY=PASSIVE each parallel
region wakes a sleeping OpenMP worker through the kernel: the wake-ups cost more than the
arithmetic. Below `SERIAL_WORK` a layer runs its LoRA kernels on the engine thread alone,
which took the 64-adapter engine from 0.63x-0.71x to 0.78x-0.93x (mean 0.86x) of the base
model there (`benchmarks/serve_throughput.py --models llama50m`, PASSIVE).

Linear heads an adapter replaces (peft `modules_to_save`, e.g. a classifier) get whole
per-slot weights instead; a head cannot be mixed, so mixture rows use the base head."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights
from fmlang.diagnostics import error
from fmlang.errors import StageError

Row = tuple[tuple[int, float], ...]  # a row's (slot, weight) pairs; () is the base model


@dataclass(frozen=True)
class _Plan:
    """The adapter entries of one forward pass: entry e adds weight[e] · row[e]'s delta
    through slot[e]. `identity`: one entry per row, in row order, weight 1 (the common
    batch of plain adapter requests), so no gather of x and no scatter of y is needed."""

    batch: int
    rows: torch.Tensor  # [entries] long
    slots: torch.Tensor  # [entries] long
    weights: torch.Tensor | None  # [entries], None when every weight is 1
    identity: bool
    key: tuple[int, tuple[int, ...]]  # (newest write to its slots, slot of each entry)


class _Entries:
    """A forward pass's (row, slot, weight) entries, and per set of slots a layer holds
    weights for (its `present` bit mask) the `_Plan` of just the entries it applies to:
    a row whose adapter leaves a layer alone costs that layer nothing. Layers of one kind
    (every q_proj, …) share a mask, so a pass builds a handful of plans, not one a layer."""

    def __init__(
        self,
        rows: Sequence[Row],
        device: torch.device | str,
        dtype: torch.dtype,
        written: Mapping[int, int],
    ) -> None:
        self.batch, self.device, self.dtype, self.written = len(rows), device, dtype, written
        self.entries = [(i, slot, w) for i, row in enumerate(rows) for slot, w in row if slot >= 0]
        self._plans: dict[int, _Plan | None] = {}

    def plan(self, present: int) -> _Plan | None:
        if present not in self._plans:
            self._plans[present] = self._build([e for e in self.entries if present >> e[1] & 1])
        return self._plans[present]

    def _build(self, entries: list[tuple[int, int, float]]) -> _Plan | None:
        if not entries:
            return None
        ones = all(w == 1.0 for _, _, w in entries)
        identity = (
            ones and len(entries) == self.batch and all(e[0] == i for i, e in enumerate(entries))
        )

        def tensor(values: list[int] | list[float], kind: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=kind, device=self.device)

        slots = [e[1] for e in entries]
        return _Plan(
            batch=self.batch,
            rows=tensor([e[0] for e in entries], torch.long),
            slots=tensor(slots, torch.long),
            weights=None if ones else tensor([e[2] for e in entries], self.dtype),
            identity=identity,
            key=(max(self.written.get(slot, 0) for slot in slots), tuple(slots)),
        )


@contextmanager
def _serial(serial: bool) -> Iterator[None]:
    """Run the enclosed kernels on the calling thread alone when `serial`."""
    if not serial:
        yield
        return
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _row(slot: int | Row) -> Row:
    if isinstance(slot, int):
        return ((slot, 1.0),) if slot >= 0 else ()
    return tuple(slot)


GATHER_BUDGET = 1 << 30  # bytes of gathered A and B the layers may keep between passes
# Below this many multiply-adds a layer's LoRA kernels run on the engine thread alone: a
# decode step's (entries x r x (in + out), about 1M on the 58M Llama at batch 32) is too
# small to repay waking an OpenMP worker, and `fmc serve`'s workers sleep between regions
# (OMP_WAIT_POLICY=PASSIVE). Prefill's (tens of millions) still runs on every thread.
SERIAL_WORK = 1 << 22


class RowSlots:
    """The forward pass in progress, shared by every wrapped layer: the adapter plan, and
    per row the one slot whose head applies (−1: the base model's head); and what the
    layers' kept gathers (`MultiLoraLinear._gathered`) may rely on and may hold."""

    def __init__(self, gather_budget: int = GATHER_BUDGET) -> None:
        self.plan: _Entries | None = None
        self.rows: torch.Tensor | None = None  # [batch] long, −1 = base head
        self.active: bool = False  # any row uses an adapter
        self.writes = 0  # slot writes so far
        self.written: dict[int, int] = {}  # slot → `writes` at its latest write
        self.gather_budget = gather_budget
        self.gathered_bytes = 0  # held by the layers' kept gathers

    def touch(self, slot: int) -> None:
        """Record that `slot`'s weights changed: gathers that include it are stale (a kept
        gather's key holds the newest write to its slots, which this raises)."""
        self.writes += 1
        self.written[slot] = self.writes


def _as_rows(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] != batch:
        raise RuntimeError(f"batch of {x.shape[0]} rows but {batch} row slots")
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _usable(kept: torch.Tensor) -> bool:
    """A copy made under inference mode serves only inference-mode passes."""
    return torch.is_inference_mode_enabled() or not kept.is_inference()


class MultiLoraLinear(nn.Module):
    """A base `nn.Linear` plus stacked LoRA slots, applied per row."""

    lora_a: torch.Tensor  # [slots, in, r_max]
    lora_b: torch.Tensor  # [slots, r_max, out], scale included

    def __init__(self, base: nn.Linear, slots: int, r_max: int, index: RowSlots) -> None:
        super().__init__()
        self.base = base
        self.index = index
        w = base.weight
        self.register_buffer("lora_a", w.new_zeros(slots, base.in_features, r_max))
        self.register_buffer("lora_b", w.new_zeros(slots, r_max, base.out_features))
        self.present = 0  # bit s set: slot s holds weights for this layer
        # the last plan's gathered A and B: (plan key, A [e, in, r], B [e, r, out])
        self._gathered: tuple[tuple[int, tuple[int, ...]], torch.Tensor, torch.Tensor] | None
        self._gathered = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        entries = self.index.plan
        plan = entries.plan(self.present) if entries is not None else None
        if plan is None:
            return y
        x3 = _as_rows(x, plan.batch)  # [b, s, in]
        y3 = y.view(plan.batch, -1, y.shape[-1])  # [b, s, out], written in place
        # multiply-adds: entries x positions x rank x (in + out)
        work = len(plan.slots) * x3.shape[1] * self.lora_a.shape[2] * (x3.shape[2] + y3.shape[2])
        with _serial(work < SERIAL_WORK):
            picked = x3 if plan.identity else x3.index_select(0, plan.rows)  # [e, s, in]
            a, b = self._gather(plan)
            hidden = torch.bmm(picked, a)  # [e, s, r]
            if plan.weights is not None:
                hidden.mul_(plan.weights[:, None, None])
            if plan.identity:
                y3.baddbmm_(hidden.to(y.dtype), b.to(y.dtype))
            else:
                y3.index_add_(0, plan.rows, torch.bmm(hidden, b).to(y.dtype))
        return y

    def _gather(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """Each entry's A and B: kept from the last pass when its plan gathered the same
        slots from an unchanged bank, else gathered (and kept, within the budget)."""
        kept = self._gathered
        if kept is not None and kept[0] == plan.key and _usable(kept[1]):
            return kept[1], kept[2]
        self._forget()
        a = self.lora_a.index_select(0, plan.slots)
        b = self.lora_b.index_select(0, plan.slots)
        size = (a.numel() + b.numel()) * a.element_size()
        if self.index.gathered_bytes + size <= self.index.gather_budget:
            self._gathered = (plan.key, a, b)
            self.index.gathered_bytes += size
        return a, b

    def _forget(self) -> None:
        if self._gathered is not None:
            _, a, b = self._gathered
            self.index.gathered_bytes -= (a.numel() + b.numel()) * a.element_size()
            self._gathered = None

    def write(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        rank = a.shape[0]
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.lora_a[slot, :, :rank].copy_(a.T)
        self.lora_b[slot, :rank].copy_(b.T)
        self.lora_b[slot, :rank].mul_(scale)
        self.present |= 1 << slot
        self.index.touch(slot)

    def clear(self, slot: int) -> None:
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.present &= ~(1 << slot)
        self.index.touch(slot)


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
        x3 = _as_rows(x, rows.shape[0])
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
    def rows(
        self, slots: Sequence[int | Row], device: torch.device | str = "cpu"
    ) -> Iterator[None]:
        """Run the forward passes inside with row i using `slots[i]`: a slot (−1: the base
        model) or (slot, weight) pairs, a weighted mixture of adapters."""
        rows = [_row(slot) for slot in slots]
        dtype = next((layer.lora_a.dtype for layer in self.lora.values()), torch.float32)
        written = self.index.written
        self.index.plan = _Entries(rows, device, dtype, written) if any(rows) else None
        heads = [row[0][0] if len(row) == 1 else -1 for row in rows]
        self.index.rows = torch.tensor(heads, dtype=torch.long, device=device)
        self.index.active = any(s >= 0 for s in heads)
        try:
            yield
        finally:
            self.index.plan = None
            self.index.rows = None
            self.index.active = False
