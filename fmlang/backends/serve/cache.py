"""The bounded multi-tier adapter cache: device slots (rows of the stacked LoRA tensors) ←
host memory (CPU tensors) ← disk (the adapter folders). LRU at each bounded tier, hit / miss /
eviction counters per tier, and pins: a slot a scheduled row still uses is never evicted.

The scheduler tells the cache which adapters its queue wants next (`wanted`, in queue
order): an eviction then takes the unpinned adapter wanted latest (never-wanted ones first,
least recently used among them), the Belady choice for the queue it can see, instead of
plain LRU, which evicts exactly the adapter the next request needs when more adapters are
active than slots. `prefetch` stages a queued request's adapter into a slot before its turn
without taking a slot anything earlier in the queue needs. What an eviction really costs
here, reading the adapter from disk and copying its tensors into the stacked slot tensors,
is timed (`activity`), so a benchmark can show it is avoided rather than assume it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights, load_adapter_weights
from fmlang.backends.serve.lora import LoraBank

TIERS = ("device", "host", "disk")


@dataclass(frozen=True)
class TierStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class CacheActivity:
    """What the scheduler's staging did and what loading cost."""

    prefetches: int = 0  # adapters staged into a slot ahead of their request's turn
    prefetch_hits: int = 0  # staged adapters a request then found resident
    slot_write_seconds: float = 0.0  # copying host tensors into the stacked slot tensors
    disk_load_seconds: float = 0.0  # reading adapter files into host memory


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
        self._staged: set[str] = set()  # prefetched and not yet used
        self._stats = {tier: [0, 0, 0] for tier in TIERS}
        self._activity = [0, 0, 0.0, 0.0]
        self._lock = threading.Lock()

    def stats(self) -> dict[str, TierStats]:
        with self._lock:
            return {tier: TierStats(*counts) for tier, counts in self._stats.items()}

    def activity(self) -> CacheActivity:
        with self._lock:
            prefetches, hits, write, disk = self._activity
            return CacheActivity(int(prefetches), int(hits), float(write), float(disk))

    def resident(self) -> dict[str, list[str]]:
        """Adapter names per tier, least recently used first."""
        with self._lock:
            return {"device": list(self._device), "host": list(self._host)}

    def is_resident(self, name: str | None) -> bool:
        with self._lock:
            return name is None or name in self._device

    def pinned(self, name: str) -> int:
        with self._lock:
            return self._pins.get(name, 0)

    def pins(self) -> dict[str, int]:
        """Pinned uses per resident adapter."""
        with self._lock:
            return dict(self._pins)

    def can_acquire(self, name: str | None) -> bool:
        """Whether `acquire(name)` would find a slot without waiting for rows to finish."""
        with self._lock:
            if name is None or name in self._device or self._free:
                return True
            return any(not self._pins.get(other) for other in self._device)

    def acquire(self, name: str | None, wanted: Sequence[str] = ()) -> int:
        """Make `name` resident on the device, pin it and return its slot (−1: base model).
        Raises KeyError for an unknown adapter, NoFreeSlot when every slot is pinned and
        StageError when the adapter cannot be loaded. `wanted`: the adapters the queue
        needs next, in order (they are evicted last)."""
        if name is None:
            return -1
        return self.acquire_all([name], wanted)[0]

    def acquire_all(self, names: Sequence[str], wanted: Sequence[str] = ()) -> list[int]:
        """`acquire` for every adapter of a mixture, all or none: NoFreeSlot (nothing
        pinned) unless the slots they need are all there."""
        for name in names:
            if name not in self.specs:
                raise KeyError(name)
        with self._lock:
            missing = [n for n in dict.fromkeys(names) if n not in self._device]
            spare = len(self._free) + sum(
                1 for n in self._device if not self._pins.get(n) and n not in names
            )
            if len(missing) > spare:
                raise NoFreeSlot(f"all {self.bank.slots} device slots are in use")
            slots: list[int] = []
            try:
                for name in names:
                    slots.append(self._pin(name, [*names, *wanted]))
            except BaseException:
                for name in names[: len(slots)]:
                    self._unpin(name)
                raise
            return slots

    def prefetch(self, name: str, wanted: Sequence[str] = ()) -> bool:
        """Stage `name` into a slot (unpinned) if a slot is free or held by an unpinned
        adapter `wanted` does not name before `name`; True if it was loaded now."""
        with self._lock:
            if name not in self.specs or name in self._device:
                return False
            before = set(wanted[: wanted.index(name)] if name in wanted else wanted)
            if not self._free and all(self._pins.get(n) or n in before for n in self._device):
                return False
            self._load_to_device(name, [name, *wanted])
            self._stats["device"][1] += 1
            self._staged.add(name)
            self._activity[0] += 1
            return True

    def release(self, name: str | None) -> None:
        """Unpin one use of `name` (it stays resident until evicted)."""
        if name is None:
            return
        with self._lock:
            self._unpin(name)

    def release_all(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                self._unpin(name)

    def _pin(self, name: str, wanted: Sequence[str]) -> int:
        slot = self._device.get(name)
        if slot is not None:
            self._count("device", 0)
            self._device.move_to_end(name)
            if name in self._staged:
                self._staged.discard(name)
                self._activity[1] += 1
        else:
            slot = self._load_to_device(name, wanted)
            self._count("device", 1)
        self._pins[name] = self._pins.get(name, 0) + 1
        return slot

    def _unpin(self, name: str) -> None:
        left = self._pins.get(name, 0) - 1
        if left < 0:
            raise RuntimeError(f"adapter `{name}` released more often than acquired")
        if left:
            self._pins[name] = left
        else:
            self._pins.pop(name, None)

    def _count(self, tier: str, which: int) -> None:
        self._stats[tier][which] += 1

    def _load_to_device(self, name: str, wanted: Sequence[str]) -> int:
        weights = self._from_host(name)
        slot = self._free_slot(wanted)
        started = time.perf_counter()
        try:
            self.bank.write(slot, weights)
        except BaseException:
            self.bank.clear(slot)
            self._free.append(slot)
            raise
        finally:
            self._activity[2] += time.perf_counter() - started
        self._device[name] = slot
        return slot

    def _victim(self, wanted: Sequence[str]) -> str | None:
        """The unpinned resident adapter to evict: one the queue does not want (least
        recently used first), else the one it wants latest."""
        order: dict[str, int] = {}
        for position, name in enumerate(wanted):
            order.setdefault(name, position)
        unpinned = [n for n in self._device if not self._pins.get(n)]
        if not unpinned:
            return None
        return max(unpinned, key=lambda n: order.get(n, len(wanted)))  # max keeps the first

    def _free_slot(self, wanted: Sequence[str]) -> int:
        if self._free:
            return self._free.pop()
        victim = self._victim(wanted)
        if victim is None:
            raise NoFreeSlot(f"all {self.bank.slots} device slots are in use")
        self._count("device", 2)
        self._staged.discard(victim)
        return self._device.pop(victim)

    def _from_host(self, name: str) -> AdapterWeights:
        weights = self._host.get(name)
        if weights is not None:
            self._count("host", 0)
            self._host.move_to_end(name)
            return weights
        self._count("host", 1)
        started = time.perf_counter()
        try:
            weights = self.loader(self.specs[name])
        except BaseException:
            self._count("disk", 1)
            raise
        finally:
            self._activity[3] += time.perf_counter() - started
        self._count("disk", 0)
        self._host[name] = weights
        while len(self._host) > self.host_slots:
            self._host.popitem(last=False)
            self._count("host", 2)
        return weights
