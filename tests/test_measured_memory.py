"""The training-memory model against measured runs: 34 recorded on an H200 (torch 2.11,
`benchmarks/results/h200_memory_sweep.json`, made by `benchmarks/memory_sweep.py --device cuda
--preset gpu`) and, live, real Trainer steps on this CPU with torch's own allocations read
from the profiler."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fmlang.verify.fidelity import row_ratios

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# h200_memory_sweep.json: the sweep's own Trainer; h200_executor_knobs.json: fmc's executor
# with the knobs only it implements (selective/offloaded checkpointing, chunked loss,
# optimizer in the backward pass), run with fmlang importable on the GPU machine.
RECORDED = (RESULTS / "h200_memory_sweep.json", RESULTS / "h200_executor_knobs.json")


def recorded_rows() -> list[dict]:  # type: ignore[type-arg]
    rows = [row for path in RECORDED for row in json.loads(path.read_text(encoding="utf-8"))]
    return [row for row in rows if row["ok"]]


@pytest.mark.parametrize("row", recorded_rows(), ids=lambda row: f"{row['name']}-{row['trainer']}")
def test_gpu_allocated_peak_within_10_percent(row: dict) -> None:  # type: ignore[type-arg]
    allocated, reserved = row_ratios(row)
    assert abs(allocated - 1) <= 0.10, f"predicted/measured allocated {allocated:.3f}"
    assert abs(reserved - 1) <= 0.25, f"predicted/measured reserved {reserved:.3f}"


def test_gpu_figures_in_the_median() -> None:
    ratios = sorted(abs(row_ratios(row)[0] - 1) for row in recorded_rows())
    assert ratios[len(ratios) // 2] <= 0.03  # median |error| of the allocated peak


CPU_ROWS = (
    "tiny-base", "tiny-full-adamw", "tiny-eager-s512", "tiny-selective-s512",
    "tiny-chunked-s512", "tiny-full-inbwd", "minilm-base", "minilm-full",
)  # fmt: skip


@pytest.fixture(scope="module")
def sweep():  # type: ignore[no-untyped-def]
    pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import memory_sweep
    import memory_sweep_configs

    return memory_sweep, {c.name: c for c in memory_sweep_configs.cpu_preset()}


@pytest.mark.parametrize("name", CPU_ROWS)
def test_cpu_training_within_15_percent(sweep, name: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    module, configs = sweep
    row = module.run_one(torch, configs[name], "cpu", module.versions(torch, "cpu"))
    assert row["ok"], row["error"]
    allocated, _ = row_ratios(row)
    assert abs(allocated - 1) <= 0.15, f"{name}: predicted/measured {allocated:.3f}"
