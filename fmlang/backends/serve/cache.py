"""The bounded multi-tier adapter cache: device slots (rows of the stacked LoRA tensors) ←
host memory (CPU tensors) ← disk (the adapter folders). LRU at each bounded tier, hit / miss /
eviction counters per tier, and pins: a slot a scheduled row still uses is never evicted."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights, load_adapter_weights
from fmlang.backends.serve.lora import LoraBank

TIERS = ("device", "host", "disk")


@dataclass(frozen=True)
class TierStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class NoFreeSlot(RuntimeError):
    """Every device slot is pinned by rows still running."""


class AdapterCache:
    """Thread-safe: the engine thread acquires and releases, the server reads stats."""

    def __init__(
        self,
        specs: Mapping[str, AdapterSpec],
        bank: LoraBank,
        host_slots: int,
        loader: Callable[[AdapterSpec], AdapterWeights] = load_adapter_weights,
    ) -> None:
        self.specs = dict(specs)
        self.bank = bank
        self.host_slots = host_slots
        self.loader = loader
        self._device: OrderedDict[str, int] = OrderedDict()  # name → slot, LRU first
        self._host: OrderedDict[str, AdapterWeights] = OrderedDict()
        self._free = list(range(bank.slots - 1, -1, -1))
        self._pins: dict[str, int] = {}
        self._stats = {tier: [0, 0, 0] for tier in TIERS}
        self._lock = threading.Lock()

    def stats(self) -> dict[str, TierStats]:
        with self._lock:
            return {tier: TierStats(*counts) for tier, counts in self._stats.items()}

    def resident(self) -> dict[str, list[str]]:
        """Adapter names per tier, least recently used first."""
        with self._lock:
            return {"device": list(self._device), "host": list(self._host)}

    def pinned(self, name: str) -> int:
        with self._lock:
            return self._pins.get(name, 0)

    def can_acquire(self, name: str | None) -> bool:
        """Whether `acquire(name)` would find a slot without waiting for rows to finish."""
        with self._lock:
            if name is None or name in self._device or self._free:
                return True
            return any(not self._pins.get(other) for other in self._device)

    def acquire(self, name: str | None) -> int:
        """Make `name` resident on the device, pin it and return its slot (−1: base model).
        Raises KeyError for an unknown adapter, NoFreeSlot when every slot is pinned and
        StageError when the adapter cannot be loaded."""
        if name is None:
            return -1
        if name not in self.specs:
            raise KeyError(name)
        with self._lock:
            slot = self._device.get(name)
            if slot is not None:
                self._count("device", 0)
                self._device.move_to_end(name)
            else:
                self._count("device", 1)
                slot = self._load_to_device(name)
            self._pins[name] = self._pins.get(name, 0) + 1
            return slot

    def release(self, name: str | None) -> None:
        """Unpin one use of `name` (it stays resident until evicted)."""
        if name is None:
            return
        with self._lock:
            left = self._pins.get(name, 0) - 1
            if left < 0:
                raise RuntimeError(f"adapter `{name}` released more often than acquired")
            if left:
                self._pins[name] = left
            else:
                self._pins.pop(name, None)

    def _count(self, tier: str, which: int) -> None:
        self._stats[tier][which] += 1

    def _load_to_device(self, name: str) -> int:
        weights = self._from_host(name)
        slot = self._free_slot()
        try:
            self.bank.write(slot, weights)
        except BaseException:
            self.bank.clear(slot)
            self._free.append(slot)
            raise
        self._device[name] = slot
        return slot

    def _free_slot(self) -> int:
        if self._free:
            return self._free.pop()
        victim = next((n for n in self._device if not self._pins.get(n)), None)
        if victim is None:
            raise NoFreeSlot(f"all {self.bank.slots} device slots are in use")
        self._count("device", 2)
        return self._device.pop(victim)

    def _from_host(self, name: str) -> AdapterWeights:
        weights = self._host.get(name)
        if weights is not None:
            self._count("host", 0)
            self._host.move_to_end(name)
            return weights
        self._count("host", 1)
        try:
            weights = self.loader(self.specs[name])
        except BaseException:
            self._count("disk", 1)
            raise
        self._count("disk", 0)
        self._host[name] = weights
        while len(self._host) > self.host_slots:
            self._host.popitem(last=False)
            self._count("host", 2)
        return weights
