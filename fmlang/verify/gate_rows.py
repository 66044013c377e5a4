"""Accuracy gates too small to mean anything, seen before training (FM0395).

At run time a gate's 95% interval that is wider than every passing value is FM0862
(`fmlang.backends.gates`). Part of that is known from the data alone: a Wilson interval is
narrowest for a perfect (or a zero) score, where its width is z^2 / (n + z^2). When even that
width exceeds the passing range (1 - 0.9 for `accuracy >= 0.9`; the bound, for each group's
accuracy, of `max_gap(accuracy, by = g) <= 0.08`), no model can pass the gate for a reason:
the split (or group) has too few rows. This module says so at `fmc check`.

It counts rows only where that is cheap: a local `csv` or `jsonl` source of at most
`MAX_BYTES` in all, inside the project (the caller looks only at confined sources). The rows
of a split are estimated as the source's rows times the split's share (a hash split assigns
each row independently, so the count is about that); cleaning only removes rows, so the
estimate errs towards silence. A group is a stored column's value or, for `= source_file`,
the file. Anything else (Parquet, folders, other metrics, derived groups) is left to FM0862.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from statistics import NormalDist

from fmlang.check.reading import read_bounded
from fmlang.diagnostics import Diagnostic, warning
from fmlang.files import DataRoots, source_files
from fmlang.ir.expr import Call
from fmlang.ir.nodes import Column, Constraint, Dataset, Spec

MAX_BYTES = 8 << 20  # sources larger than this (in all) are not counted at check time
DEFAULT_CONFIDENCE = 0.95  # as the run's gates report
Rows = Counter[str]  # group → rows ("" for the whole split)


def small_gates(spec: Spec, entry: Path, roots: DataRoots) -> list[Diagnostic]:
    """FM0395 for each accuracy gate whose split or groups are too small for any score."""
    found: list[Diagnostic] = []
    for constraint in spec.constraints:
        dataset = spec.dataset(constraint.on_data.dataset) if constraint.on_data else None
        allowed = _passing_width(constraint)
        if dataset is None or allowed is None:
            continue
        share = _share(dataset, constraint.on_data.split if constraint.on_data else None)
        by = _group_column(constraint)
        counted = _count(dataset, (entry / dataset.file).parent, roots, by) if share else None
        if counted is None or share is None:
            continue
        z = NormalDist().inv_cdf(0.5 + (constraint.confidence or DEFAULT_CONFIDENCE) / 2)
        small = [(group, rows * share, z * z / (rows * share + z * z))
                 for group, rows in sorted(counted.items())
                 if z * z / (rows * share + z * z) > allowed]  # fmt: skip
        if small:
            found.append(_warning(constraint, by, small, allowed))
    return found


def _passing_width(c: Constraint) -> float | None:
    """How wide the passing range of the accuracy gate is; None for other gates."""
    if c.bound is None or c.on_data is None:
        return None
    options = {o.name: o.value for o in c.options}
    if c.kind == "quality" and c.metric == "accuracy" and c.op in (">=", ">", "<=", "<"):
        return 1 - c.bound.value if c.op in (">=", ">") else c.bound.value
    if (
        c.kind == "fairness"
        and c.metric == "max_gap"
        and options.get("of", "accuracy") == ("accuracy")
    ):
        return c.bound.value if c.op in ("<=", "<") else None
    return None


def _group_column(c: Constraint) -> str | None:
    by = next((o.value for o in c.options if o.name == "by"), None)
    return str(by) if c.kind == "fairness" and by is not None else None


def _share(dataset: Dataset, split: str | None) -> float | None:
    """The fraction of the source's rows in `split` (all of them without a split)."""
    if split is None:
        return 1.0
    parts = dataset.splits.parts if dataset.splits else ()
    part = next((p for p in parts if p.name == split), None)
    return part.fraction if part is not None and part.files is None and part.fraction else None


def _count(dataset: Dataset, folder: Path, roots: DataRoots, by: str | None) -> Rows | None:
    """Rows per group of `by` (one group "" without it); None when not cheap to count."""
    source = dataset.source
    if source is None or source.kind not in ("csv", "jsonl"):
        return None
    files = source_files(dataset, folder)
    if not files or not all(roots.holds(f) for f in files):
        return None
    if sum(f.stat().st_size for f in files) > MAX_BYTES:
        return None
    column = next((c for c in dataset.columns if c.name == by), None) if by else None
    per_file = column is not None and column.derived is not None
    if by is not None and (column is None or (per_file and not _is_source_file(column))):
        return None
    field = None if by is None or per_file else (column.path if column else None) or by
    rows: Rows = Counter()
    for file in files:
        data = read_bounded(file, MAX_BYTES)
        values = _values(data.decode("utf-8", "replace"), source.kind, field) if data else None
        if values is None:
            return None
        rows.update(file.name if per_file else v for v in values)
    return rows


def _is_source_file(column: Column) -> bool:
    derived = column.derived
    return isinstance(derived, Call) and derived.func == "source_file" and not derived.args


def _values(text: str, kind: str, field: str | None) -> list[str] | None:
    """Each row's value of `field` (dotted for JSON), "" for every row without one."""
    if kind == "csv":
        records = list(csv.DictReader(io.StringIO(text)))
        if field is not None and records and field not in records[0]:
            return None
        return [str(r.get(field, "")) if field else "" for r in records]
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return None
        for key in field.split(".") if field else []:
            record = record.get(key) if isinstance(record, dict) else None
        out.append(str(record) if field else "")
    return out


def _warning(
    c: Constraint, by: str | None, small: list[tuple[str, float, float]], allowed: float
) -> Diagnostic:
    where = f"{c.on_data.dataset}.{c.on_data.split}" if c.on_data and c.on_data.split else (
        c.on_data.dataset if c.on_data else "")  # fmt: skip
    parts = [f"`{by} = {g}` has about {n:.0f}" if by else f"about {n:.0f}"
             for g, n, _ in small[:5]]  # fmt: skip
    more = f" (and {len(small) - 5} more groups)" if len(small) > 5 else ""
    level = f"{(c.confidence or DEFAULT_CONFIDENCE) * 100:g}%"
    narrowest = min(w for _, _, w in small)
    return warning(
        "FM0395",
        f"too few rows for this gate to mean anything: {', '.join(parts)}{more} rows in "
        f"`{where}`, where even a perfect score's {level} interval is {narrowest:.3g} wide, "
        f"wider than the {allowed:.3g} of values that pass",
        c.span.to_span() if c.span else None,
        "no model can pass this gate for a reason",
        help="evaluate on more rows (a larger split, or fewer, larger groups), or loosen the "
        "bound; `fmc run` reports the measured interval (FM0862)",
    )
