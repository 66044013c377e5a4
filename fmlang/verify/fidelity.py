"""Fidelity cases: public measured runs written as specs, scored against the verifier.

A case is a `.fm` file whose header says what was measured:

    # case: T3
    # source: where the figure is published
    # measured: 16.2 GiB allocated per device     (allocated | reserved | device), or
    # measured: 104.9 tok/s decode                 (generated tokens per second)
    # outcome: ran                                 (ran | oom)
    # bound: upper                                 (optional: the run's rows were shorter
    #                                               than the spec's budget, so the
    #                                               prediction is an upper bound)

The verifier's per-device training breakdown (`verify.json`'s `memory`) is compared with
the figure in the same metric: torch's allocated peak, the allocator's reserved peak
(allocated + reserve), or the whole device (+ CUDA context). The verdict agrees when the
verifier says "fits" for a run that ran and "does not fit" for one that ran out of memory.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.check.units import normalise

HEADER = re.compile(r"^#\s*(case|source|measured|outcome|bound|note):\s*(.*)$")
MEASURED = re.compile(
    r"^([0-9][0-9_.]*)\s*([A-Za-z]+(?:/s)?)\s+(allocated|reserved|device|decode)\b"
)


@dataclass(frozen=True)
class Case:
    path: Path
    id: str
    source: str
    measured: float  # bytes
    metric: str
    ran: bool
    upper_bound: bool


@dataclass(frozen=True)
class Scored:
    case: Case
    predicted: float | None  # bytes in the case's metric, None when nothing was predicted
    fits: bool | None
    terms: dict[str, float]
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.predicted / self.case.measured if self.predicted else None

    @property
    def agrees(self) -> bool:
        return self.fits is not None and self.fits == self.case.ran


def read_case(path: Path) -> Case:
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        found = HEADER.match(line)
        if found:
            fields[found.group(1)] = found.group(2).strip()
    measured = MEASURED.match(fields.get("measured", ""))
    if measured is None or "case" not in fields:
        raise ValueError(f"{path}: header needs `# case:` and `# measured: N UNIT METRIC`")
    number, unit, metric = measured.groups()
    size = normalise(float(number.replace("_", "")), unit)
    wanted = "token_rate" if metric == "decode" else "bytes"
    if size is None or size.dimension != wanted:
        raise ValueError(f"{path}: `{unit}` does not measure {metric}")
    return Case(
        path=path,
        id=fields["case"],
        source=fields.get("source", ""),
        measured=size.value,
        metric=metric,
        ran=fields.get("outcome", "ran") == "ran",
        upper_bound=fields.get("bound") == "upper",
    )


def cases(folder: Path) -> list[Case]:
    return [read_case(p) for p in sorted(folder.glob("*.fm")) if not p.name.startswith("_")]


def score(case: Case) -> Scored:
    """Verify the case's spec and read the per-device training memory of model `run`."""
    from fmlang.api import check_text

    text = case.path.read_text(encoding="utf-8")
    result = check_text(text, str(case.path), case.path.parent, verify=True)
    report = result.report
    errors = [d for d in result.diagnostics if d.severity.name == "ERROR"]
    if report is None or any(not d.code.startswith("FM06") for d in errors):
        text = "; ".join(f"{d.code} {d.message}" for d in errors) or "not verified"
        return Scored(case, None, None, {}, text)
    if case.metric == "decode":
        return _score_decode(case, report)
    memory = next((s.get("memory") for s in report.stages if s["stage"] == "train:run"), None)
    if memory is None:
        return Scored(case, None, not errors, {}, "no training memory in the report")
    return Scored(case, predicted_in(memory, case.metric), memory["fits"], memory["per_device"])


def _score_decode(case: Case, report: Any) -> Scored:
    """Serving cases: the verdict is whether the deployment fits its devices; the figure is
    the throughput constraint's estimate (generated tokens per second)."""
    rate = next((r.get("estimate") for r in report.constraints if r["kind"] == "throughput"), None)
    return Scored(case, rate if case.ran else None, report.feasible, {})


def predicted_in(memory: dict[str, Any], metric: str) -> float:
    allocated = float(memory["allocated"])
    if metric == "allocated":
        return allocated
    reserve = float(memory["per_device"].get("allocator", 0))
    if metric == "reserved":
        return allocated + reserve
    return float(memory["peak"])


@dataclass(frozen=True)
class Summary:
    total: int
    agree: int
    false_fits: int
    false_oom: int
    median_error: float | None
    p90_error: float | None
    scored_errors: int
    broken_bounds: tuple[str, ...]  # upper-bound cases predicted below the measurement


def summarise(scored: list[Scored]) -> Summary:
    """Verdicts over every case; figure errors over the cases that are not upper bounds."""
    errors = sorted(
        abs(s.ratio - 1) for s in scored if s.ratio is not None and not s.case.upper_bound
    )
    p90 = errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))] if errors else None
    broken = tuple(
        s.case.id for s in scored if s.case.upper_bound and s.ratio is not None and s.ratio < 1
    )
    return Summary(
        total=len(scored),
        agree=sum(s.agrees for s in scored),
        false_fits=sum(s.fits is True and not s.case.ran for s in scored),
        false_oom=sum(s.fits is False and s.case.ran for s in scored),
        median_error=statistics.median(errors) if errors else None,
        p90_error=p90,
        scored_errors=len(errors),
        broken_bounds=broken,
    )


# ---- our own measured runs (benchmarks/memory_sweep.py rows) ---------------------------


def row_breakdown(row: dict[str, Any]) -> Any:
    """The cost model's breakdown for one measured sweep row (its model shape and setup)."""
    from fmlang.verify.costmodel import Arch
    from fmlang.verify.training import TrainSetup, breakdown

    model, setup = row["model"], row["setup"]
    decoder = model["family"] != "bert"
    arch = Arch(
        params=model["params"], layers=model["layers"], hidden=model["hidden"],
        heads=model["heads"], kv_heads=model["kv_heads"], head_dim=model["head_dim"],
        intermediate=model["intermediate"], vocab=model["vocab"],
        max_seq=max(setup["seq"], 512), dtype=setup["weights_dtype"], decoder=decoder,
        family=model["family"], tied=model["tie"], gated=decoder,
    )  # fmt: skip
    return breakdown(arch, TrainSetup(
        adapter=setup["adapter"], rank=setup["rank"], targets=tuple(setup["targets"]),
        batch=setup["batch"], seq=setup["seq"], task=setup["task"],
        classes=max(setup["classes"], 2), precision=setup["precision"],
        weights_dtype=setup["weights_dtype"], master_weights=setup["master_weights"],
        optimizer=setup["optimizer"], checkpointing=setup["checkpointing"],
        attention=setup["attention"], gpu=row["device"] == "cuda",
        chunked_loss=setup.get("chunked_loss", False),
        optimizer_in_backward=setup.get("optimizer_in_backward", False),
    ))  # fmt: skip


def row_ratios(row: dict[str, Any]) -> tuple[float, float]:
    """(predicted / measured) for the allocated and the reserved peak of one sweep row;
    torch's allocations made before the row (baseline_allocated) are not the row's."""
    found = row_breakdown(row)
    measured = row["measured"]
    allocated = measured["allocated"] - (measured.get("baseline_allocated") or 0)
    reserved = measured["reserved"]
    predicted_reserved = found.allocated + found.terms.get("allocator", 0.0)
    return found.allocated / allocated, predicted_reserved / reserved
