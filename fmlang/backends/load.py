"""How busy the rest of the machine was while something was timed.

A latency measured while other processes compete for the CPU says nothing about the model:
the gate would fail (or pass) by accident. `machine_load()` reads the machine's busy CPU time
(`/proc/stat`) and this process's own CPU time (`os.times`) around a block; the difference,
over the wall time, is how many cores *other* processes kept busy. Where `/proc/stat` does
not exist the sample says so (`other_cores` None) rather than guessing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# Other processes using more than a quarter of the machine's cores (at least half a core)
# make a latency measurement unusable for a gate.
LOADED_FRACTION = 0.25


@dataclass
class LoadSample:
    cores: int = os.cpu_count() or 1
    wall_s: float = 0.0
    other_cores: float | None = None  # cores' worth of CPU other processes used

    @property
    def loaded(self) -> bool:
        if self.other_cores is None:
            return False
        return self.other_cores > max(0.5, LOADED_FRACTION * self.cores)

    def to_json(self) -> dict[str, object]:
        shown = None if self.other_cores is None else round(self.other_cores, 2)
        return {"cores": self.cores, "other_cores": shown, "loaded": self.loaded}


def _busy_seconds() -> float | None:
    """Seconds of CPU time the whole machine spent busy since boot (all cores)."""
    try:
        first = PROC_STAT.read_text(encoding="ascii").splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    values = [int(v) for v in first[1:9]]
    busy = sum(values) - values[3] - values[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def machine_load() -> Iterator[LoadSample]:
    """Measure other processes' CPU use while the block runs (filled in on exit)."""
    sample = LoadSample()
    busy, own, started = _busy_seconds(), _own_seconds(), time.perf_counter()
    try:
        yield sample
    finally:
        sample.wall_s = time.perf_counter() - started
        after = _busy_seconds()
        if busy is not None and after is not None and sample.wall_s > 0:
            others = (after - busy) - (_own_seconds() - own)
            sample.other_cores = max(0.0, others / sample.wall_s)
