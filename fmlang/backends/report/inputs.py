"""What the run report draws, read from the JSON files a run left in its build folder.

`run/report.json` lists every stage with its outputs (cached stages too); each labels stage's
`<labels>.analysis.json` and each model's `metrics.json` (training, evaluation per split and
group, gates, memory and latency beside the cost model's predictions) hold the numbers.
A file that is missing or unreadable leaves its section out; nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.backends.confidence import Interval, group_intervals, perplexity_interval


@dataclass(frozen=True)
class LabelsInput:
    stage: str  # `labels:spam`, or `labels:spam@comments.test` for an `apply_to` target
    analysis: dict[str, Any]  # the analysis JSON as the labels stage wrote it
    page: str | None  # the labels stage's own HTML report, relative to the build folder


@dataclass(frozen=True)
class GroupView:
    """One model's metric per group of one column on one split, with each group's interval,
    and the fairness gate on that gap when the spec has one."""

    split: str
    by: str
    metric: str
    values: dict[str, float]
    intervals: dict[str, Interval]
    gate: dict[str, Any] | None


@dataclass(frozen=True)
class ModelInput:
    stage: str  # `train:m` or `merge:m`
    metrics: dict[str, Any]
    groups: list[GroupView] = field(default_factory=list)


@dataclass(frozen=True)
class RunInputs:
    stages: list[dict[str, Any]]
    labels: list[LabelsInput]
    models: list[ModelInput]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`, or None when it is missing, unreadable or not an object."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_inputs(build_dir: Path, report: dict[str, Any]) -> RunInputs:
    stages = [s for s in report.get("stages") or [] if isinstance(s, dict) and s.get("stage")]
    labels: list[LabelsInput] = []
    models: list[ModelInput] = []
    fairness = _fairness_constraints(build_dir)
    for stage in stages:
        outputs = [str(o) for o in stage.get("outputs") or []]
        name = str(stage["stage"])
        if name.startswith("labels:"):
            labels += _labels(build_dir, name, outputs)
        elif name.startswith(("train:", "merge:")):
            models += _model(build_dir, name, outputs, fairness)
    return RunInputs(stages, labels, models)


def _labels(build_dir: Path, stage: str, outputs: list[str]) -> list[LabelsInput]:
    analysis_path = next((o for o in outputs if o.endswith(".analysis.json")), None)
    document = read_json(build_dir / analysis_path) if analysis_path else None
    if document is None or not isinstance(document.get("analysis"), dict):
        return []
    page = next((o for o in outputs if o.endswith(".report.html")), None)
    return [LabelsInput(stage, document, page if page and (build_dir / page).is_file() else None)]


def _model(
    build_dir: Path, stage: str, outputs: list[str], fairness: list[dict[str, Any]]
) -> list[ModelInput]:
    metrics_path = next((o for o in outputs if o.endswith("metrics.json")), None)
    metrics = read_json(build_dir / metrics_path) if metrics_path else None
    if metrics is None:
        return []
    target = stage.split(":", 1)[1]
    for gate in metrics.get("gates") or []:
        if isinstance(gate, dict) and gate.get("metric") == "max_gap" and "by" not in gate:
            gate.update(_grouping_of(gate, target, fairness))
    return [ModelInput(stage, metrics, group_views(metrics))]


def _fairness_constraints(build_dir: Path) -> list[dict[str, Any]]:
    """The spec's fairness constraints from the resolved IR in `fm.lock.json`: for gates
    recorded before their records named the column they group by."""
    lock = read_json(build_dir / "fm.lock.json") or {}
    constraints = (
        (lock.get("ir") or {}).get("constraints") if isinstance(lock.get("ir"), dict) else None
    )
    return [c for c in constraints or [] if isinstance(c, dict) and c.get("kind") == "fairness"]


def _grouping_of(
    gate: dict[str, Any], target: str, fairness: list[dict[str, Any]]
) -> dict[str, Any]:
    """`by`, `of` and `split` of the first fairness constraint on `target` with the gate's
    operator and bound (the IR keeps no line to match on)."""
    for c in fairness:
        bound = (c.get("bound") or {}).get("value")
        if (
            c.get("target") == target
            and c.get("op") == gate.get("op")
            and bound == gate.get("bound")
        ):
            options = {o.get("name"): o.get("value") for o in c.get("options") or []}
            on = c.get("on_data") or {}
            split = f"{on['dataset']}.{on['split']}" if on.get("split") else on.get("dataset")
            return {"by": str(options.get("by")), "of": str(options.get("of", "accuracy")),
                    "split": split}  # fmt: skip
    return {}


def group_views(metrics: dict[str, Any]) -> list[GroupView]:
    """Every (split, column) the model was evaluated by, in the metric its fairness gate
    compares (else accuracy, else perplexity, else macro F1)."""
    gates = [g for g in metrics.get("gates") or [] if isinstance(g, dict) and g.get("by")]
    views = []
    for split, result in _dicts(metrics.get("eval")).items():
        for by, grouped in _dicts(result.get("by")).items():
            groups = _dicts(grouped.get("groups"))
            gate = next((g for g in gates if g["by"] == by and g.get("split") in (split, None)),
                        None)  # fmt: skip
            metric = str(gate.get("of")) if gate else _default_metric(groups)
            values = {n: v for n, g in groups.items() if (v := metric_value(g, metric)) is not None}
            if values:
                views.append(GroupView(split, by, metric, values, _intervals(groups, metric), gate))
    return views


def metric_value(values: dict[str, Any], metric: str) -> float | None:
    """`accuracy`, `macro_f1`, `perplexity`, or a class's score written `f1[spam]`."""
    name, _, cls = metric.partition("[")
    value = values.get(metric) if not cls else _dicts(values.get("per_class")).get(
        cls.rstrip("]"), {}).get(name)  # fmt: skip
    return float(value) if isinstance(value, int | float) else None


def _default_metric(groups: dict[str, dict[str, Any]]) -> str:
    for metric in ("accuracy", "perplexity", "macro_f1"):
        if any(metric in g for g in groups.values()):
            return metric
    return "accuracy"


def _intervals(groups: dict[str, dict[str, Any]], metric: str) -> dict[str, Interval]:
    """Each group's 95% interval: Wilson or the bootstrap (`confidence.py`), as the gates
    compute them; perplexity from the group's per-row losses when evaluation kept them."""
    if metric != "perplexity":
        return group_intervals(groups, metric)
    found = {name: perplexity_interval(g.get("per_row")) for name, g in groups.items()}
    return {name: interval for name, interval in found.items() if interval is not None}


def mapping(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else empty."""
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping of names to mappings (a JSON object), else empty."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, dict)}
