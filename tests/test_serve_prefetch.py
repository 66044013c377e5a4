"""No eviction cliff: the cache evicts what the queue wants latest and stages queued
adapters ahead of their turn; admission groups rows by resident adapter, drains slots for
a waiting request, and bounds how often any request is passed over. With twice as many
adapters as device slots every request is answered exactly as with all of them resident."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fmlang.backends.serve.adapters import AdapterSpec, AdapterWeights, LoraWeights  # noqa: E402
from fmlang.backends.serve.cache import AdapterCache, NoFreeSlot, TierStats  # noqa: E402
from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.engine import Engine, Event, Failed, Finished, Ticket  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.lora import LoraBank  # noqa: E402
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.sampling import Sampling  # noqa: E402


def _cache(names: list[str], slots: int) -> AdapterCache:
    specs = {
        name: AdapterSpec(name, Path(name), {"proj": 2}, {"proj": (3, 4)}, {}, {"proj": 1.0})
        for name in names
    }
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(4, 3))
    bank = LoraBank(model, specs, slots=slots)

    def loader(spec: AdapterSpec) -> AdapterWeights:
        if spec.name == "bad":
            raise OSError("unreadable")
        weight = float(names.index(spec.name) + 1)
        lora = LoraWeights(torch.full((2, 4), weight), torch.full((3, 2), weight), 1.0)
        return AdapterWeights(spec.name, {"proj": lora}, {})

    return AdapterCache(specs, bank, host_slots=len(names), loader=loader)


def test_eviction_spares_what_the_queue_wants() -> None:
    cache = _cache(["a", "b", "c"], slots=2)
    for name in ["a", "b"]:
        cache.acquire(name)
        cache.release(name)
    # plain LRU would evict a (used first); the queue wants a next, so b goes
    cache.acquire("c", wanted=["c", "a"])
    assert cache.resident()["device"] == ["a", "c"]
    cache.release("c")
    # both wanted: the one wanted latest goes
    cache.acquire("b", wanted=["b", "c", "a"])
    assert set(cache.resident()["device"]) == {"c", "b"}


def test_prefetch_stages_without_taking_what_comes_first() -> None:
    cache = _cache(["a", "b", "c"], slots=2)
    assert cache.prefetch("a", wanted=["a"])
    assert not cache.prefetch("a", wanted=["a"])  # already there
    cache.acquire("b")
    # the only other slot holds a, wanted before c: c is not staged over it
    assert not cache.prefetch("c", wanted=["a", "c"])
    assert cache.prefetch("c", wanted=["c", "a"]) and "a" not in cache.resident()["device"]
    cache.acquire("c")  # the request finds its staged adapter
    activity = cache.activity()
    assert (activity.prefetches, activity.prefetch_hits) == (2, 1)
    assert activity.slot_write_seconds > 0 and activity.disk_load_seconds > 0
    assert cache.stats()["device"] == TierStats(hits=1, misses=3, evictions=1)


def test_acquire_all_pins_all_or_nothing() -> None:
    cache = _cache(["a", "b", "c", "bad"], slots=2)
    assert cache.acquire_all(["a", "b"]) == [cache.acquire("a"), cache.acquire("b")]
    before = cache.stats()["device"]
    with pytest.raises(NoFreeSlot):
        cache.acquire_all(["c"])
    assert cache.stats()["device"] == before  # a refused acquire is no miss
    cache.release_all(["a", "a", "b", "b"])
    with pytest.raises(OSError):
        cache.acquire_all(["a", "bad"])  # a was pinned first, then rolled back
    assert cache.pins() == {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("prefetch")
    base = build_tiny_causal_lm(root / "base", seed=51)
    return base, build_random_adapters(base, root / "adapters", [2, 4, 8, 4, 2, 8], seed=52)


def _engine(tiny: tuple[Path, dict[str, Path]], slots: int, max_skips: int) -> Engine:
    base, adapters = tiny
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=6,
        cache={"device_slots": slots, "host_slots": len(adapters)},
    )
    engine = build_engine(config)
    engine.max_skips = max_skips
    return engine


def _serve(engine: Engine, requests: list[tuple[str | None, list[int], int]]):  # type: ignore[no-untyped-def]
    results: list[Event | None] = [None] * len(requests)
    tickets: list[Ticket] = []
    left = threading.Semaphore(0)

    def sink_for(index: int):  # type: ignore[no-untyped-def]
        def sink(event: Event) -> None:
            if isinstance(event, (Finished, Failed)):
                results[index] = event
                left.release()

        return sink

    for index, (adapter, prompt, new) in enumerate(requests):  # all queued, then started
        tickets.append(engine.submit_generate(adapter, prompt, Sampling(new), sink_for(index)))
    engine.start()
    try:
        for _ in requests:
            assert left.acquire(timeout=60), "a request never finished"
    finally:
        engine.stop()
    return results, tickets


def _requests(count: int) -> list[tuple[str | None, list[int], int]]:
    generator = torch.Generator().manual_seed(5)
    names: list[str | None] = [None, "a0", "a1", "a2", "a3", "a4", "a5"]
    requests = []
    for index in range(count):
        length = int(torch.randint(1, 10, (1,), generator=generator))
        prompt = torch.randint(3, 259, (length,), generator=generator).tolist()
        pick = int(torch.randint(0, len(names), (1,), generator=generator))
        requests.append((names[pick], prompt, 2 + index % 7))
    return requests


def test_twice_the_adapters_of_the_slots(tiny: tuple[Path, dict[str, Path]]) -> None:
    """Six adapters in three slots: every answer equals the all-resident engine's, no
    request is passed over more than the bound, slots are drained for waiting requests
    and evictions stay bounded (each one makes room for a request that runs)."""
    requests = _requests(36)
    resident, _ = _serve(_engine(tiny, slots=6, max_skips=3), requests)
    shared_engine = _engine(tiny, slots=3, max_skips=3)
    shared, tickets = _serve(shared_engine, requests)
    for index, (one, other) in enumerate(zip(resident, shared, strict=True)):
        assert isinstance(one, Finished) and isinstance(other, Finished), index
        assert one.token_ids == other.token_ids, index
    assert max(ticket.skips for ticket in tickets) <= 3
    assert shared_engine.scheduler.skips > 0 and shared_engine.scheduler.drains > 0
    device = shared_engine.cache.stats()["device"]
    assert 0 < device.evictions <= device.misses <= len(requests)
    assert shared_engine.cache.pins() == {} and shared_engine.running() == 0


def test_fairness_bound_holds_against_a_stream_of_resident_requests(
    tiny: tuple[Path, dict[str, Path]],
) -> None:
    """Two slots held by a0 and a long a2 row: a request for a1 waits while a2's slot
    drains, and short a0 requests behind it keep going ahead, but only `max_skips` times;
    then nothing younger is admitted until it runs."""
    requests: list[tuple[str | None, list[int], int]] = [("a0", [5, 6], 16)] * 2
    requests += [("a2", [3, 4], 16), ("a1", [7, 8], 2)]
    requests += [("a0", [9, 10, 11], 2)] * 12
    engine = _engine(tiny, slots=2, max_skips=2)
    results, tickets = _serve(engine, requests)
    assert all(isinstance(result, Finished) for result in results)
    assert tickets[3].skips == 2  # passed over up to the bound, and no further
    assert max(ticket.skips for ticket in tickets) <= 2
    waiting, late = results[3], results[-1]
    assert isinstance(waiting, Finished) and isinstance(late, Finished)
    assert waiting.first_token_s < late.first_token_s  # the younger rest waited for it
