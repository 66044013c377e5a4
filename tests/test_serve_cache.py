"""The multi-tier adapter cache: LRU order and counters per tier, pins that keep a slot a
running row needs, and a failed load that leaves the cache consistent."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights, LoraWeights  # noqa: E402
from fmlang.backends.serve.cache import AdapterCache, NoFreeSlot, TierStats  # noqa: E402
from fmlang.backends.serve.lora import LoraBank  # noqa: E402


def _spec(name: str) -> AdapterSpec:
    return AdapterSpec(name, Path(name), {"proj": 2}, {"proj": (3, 4)}, {}, {"proj": 1.0})


def _cache(names: list[str], slots: int, host: int) -> tuple[AdapterCache, list[str]]:
    specs = {name: _spec(name) for name in names}
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(4, 3))
    bank = LoraBank(model, specs, slots=slots)
    loads: list[str] = []

    def loader(spec: AdapterSpec) -> AdapterWeights:
        if spec.name == "bad":
            raise OSError("unreadable")
        loads.append(spec.name)
        weight = float(names.index(spec.name) + 1)
        lora = LoraWeights(torch.full((2, 4), weight), torch.full((3, 2), weight), 1.0)
        return AdapterWeights(spec.name, {"proj": lora}, {})

    return AdapterCache(specs, bank, host_slots=host, loader=loader), loads


def test_lru_and_counters_per_tier() -> None:
    cache, loads = _cache(["a", "b", "c", "d"], slots=2, host=3)
    for name in ["a", "b", "a", "c", "d", "a", "b"]:
        cache.acquire(name)
        cache.release(name)
    # device (2 slots): a b | a hit | c evicts b | d evicts a | a evicts c | b evicts d
    assert cache.stats()["device"] == TierStats(hits=1, misses=6, evictions=4)
    # host (3): a b c d(evicts a) | a reloads (evicts b) | b reloads (evicts c)
    assert cache.stats()["host"] == TierStats(hits=0, misses=6, evictions=3)
    assert cache.stats()["disk"] == TierStats(hits=6, misses=0, evictions=0)
    assert loads == ["a", "b", "c", "d", "a", "b"]
    assert cache.resident() == {"device": ["a", "b"], "host": ["d", "a", "b"]}
    slot = cache.acquire("b")
    assert cache.bank.lora["proj"].lora_a[slot, 0, 0].item() == 2.0  # b's weights sit there
    assert cache.acquire(None) == -1  # the base model needs no slot


def test_pinned_slots_are_never_evicted() -> None:
    cache, _ = _cache(["a", "b", "c"], slots=2, host=3)
    slot_a, slot_b = cache.acquire("a"), cache.acquire("b")
    assert cache.pinned("a") == 1 and not cache.can_acquire("c")
    with pytest.raises(NoFreeSlot):
        cache.acquire("c")
    assert cache.can_acquire("a")  # resident: another row may share the slot
    assert cache.acquire("a") == slot_a and cache.pinned("a") == 2
    cache.release("b")
    assert cache.can_acquire("c")
    assert cache.acquire("c") == slot_b  # b was the only unpinned one
    assert cache.resident()["device"] == ["a", "c"]
    cache.release("a")
    cache.release("a")
    with pytest.raises(RuntimeError):
        cache.release("a")


def test_failed_load_leaves_the_cache_consistent() -> None:
    cache, _ = _cache(["a", "bad"], slots=1, host=2)
    cache.acquire("a")
    cache.release("a")
    with pytest.raises(OSError):
        cache.acquire("bad")
    assert cache.stats()["disk"] == TierStats(hits=1, misses=1, evictions=0)
    assert cache.resident()["device"] == ["a"]  # nothing was evicted for the failed load
    assert cache.pinned("bad") == 0
    with pytest.raises(KeyError):
        cache.acquire("unknown")
