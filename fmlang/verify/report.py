"""What `fmc plan` prints and `verify.json` stores: verdicts, knobs, estimates, stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmlang.diagnostics import Diagnostic
from fmlang.ir.nodes import Constraint, Spec
from fmlang.verify.problem import Problem
from fmlang.verify.solve import Solution
from fmlang.verify.units import show

BINDING_SLACK = 0.10  # a bound within 10% of its estimate is reported as binding
GATES = ("quality", "fairness", "gpu_hours")


@dataclass
class VerifyReport:
    feasible: bool
    diagnostics: list[Diagnostic]
    knobs: dict[str, int | str] = field(default_factory=dict)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    # `base auto in [...]`: per selection model, the candidates kept and those dropped (why)
    selections: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            # 2: train stages carry `memory` (the per-device breakdown); keys of 1 unchanged.
            "schema_version": "2",
            "feasible": self.feasible,
            "knobs": dict(sorted(self.knobs.items())),
            "constraints": self.constraints,
            "stages": self.stages,
            "diagnostics": [d.to_json() for d in self.diagnostics],
        } | ({"selections": self.selections} if self.selections else {})


def merge_reports(spec: Spec, reports: list[VerifyReport]) -> VerifyReport:
    """Combine the parts' reports, in the spec's constraint order, stages deduplicated."""
    merged = VerifyReport(
        all(r.feasible for r in reports), [d for r in reports for d in r.diagnostics]
    )
    stages: dict[str, dict[str, Any]] = {}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for part in reports:
        merged.knobs.update(part.knobs)
        for stage in part.stages:
            if stage.get("knobs") or stage.get("estimates") or stage["stage"] not in stages:
                stages[stage["stage"]] = stage
        for row in part.constraints:
            rows[(row["target"], row["line"])] = row
    merged.stages = sorted(stages.values(), key=lambda s: (_ORDER.index(s["kind"]), s["stage"]))
    merged.constraints = [
        rows[(c.target, c.span.line if c.span else 0)]
        for c in spec.constraints
        if (c.target, c.span.line if c.span else 0) in rows
    ]
    return merged


_ORDER = ("data", "labels", "train", "merge", "deploy")


def build_report(spec: Spec, problem: Problem, solution: Solution) -> VerifyReport:
    report = VerifyReport(
        solution.feasible, solution.diagnostics, {k: v for k, v in solution.knobs.items()}
    )
    by_line = {_line_key(key): key for key in problem.bounds}
    for constraint in spec.constraints:
        report.constraints.append(_row(constraint, problem, solution, by_line))
    report.stages = _stages(spec, problem, solution)
    return report


def _line_key(key: str) -> tuple[str, int]:
    target, *_, line = key.split(":")
    return target, int(line) if line.isdigit() else 0


def _row(
    c: Constraint, problem: Problem, solution: Solution, by_line: dict[tuple[str, int], str]
) -> dict[str, Any]:
    line = c.span.line if c.span else 0
    row: dict[str, Any] = {
        "target": c.target,
        "kind": c.kind,
        "metric": c.metric,
        "line": line,
        "file": c.span.file if c.span else None,
        "bound": c.bound.text if c.bound else ", ".join(c.values),
    }
    total_cost = c.kind == "cost" and c.bound is not None and c.bound.dimension == "money"
    if c.kind in GATES or total_cost:
        return {**row, "verdict": "gate", "note": "checked when the executor runs"}
    key = by_line.get((c.target, line))
    if key is None:
        conflicted = any(
            t.key in solution.conflicting and t.span is not None
            and (t.span.file, t.span.line) == (c.span.file if c.span else None, line)
            for t in problem.tracked
        )  # fmt: skip
        return {**row, "verdict": "infeasible" if conflicted else "ok"}
    if key in solution.conflicting:
        return {**row, "verdict": "infeasible"}
    estimate_key, _, bound = problem.bounds[key]
    unit = problem.estimates[estimate_key].unit
    value = solution.values.get(estimate_key)
    if value is None:
        return {**row, "verdict": "infeasible"}
    slack = abs(bound - value) / abs(bound) if bound else 0.0
    process = problem.estimates.get(f"{c.target}.memory.process")
    if c.kind == "memory" and process is not None and estimate_key != f"{c.target}.memory":
        row["process_bytes"] = solution.values.get(process.key)  # counted in the estimate
    return {
        **row,
        "verdict": "ok",
        "estimate": value,
        "estimate_text": show(value, unit),
        "unit": unit,
        "binding": slack < BINDING_SLACK,
        "slack": round(slack, 4),
    }


DEPLOY_KEYS = ("replicas", "serve_batch", "max_adapters", "cost")


def _stages(spec: Spec, problem: Problem, solution: Solution) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for dataset in spec.datasets:
        stages.append(
            {"stage": f"data:{dataset.name}", "kind": "data", "steps": len(dataset.cleaning)}
        )
    for labels in spec.labels:
        stages.append(
            {"stage": f"labels:{labels.name}", "kind": "labels", "functions": len(labels.functions)}
        )
    for model in spec.models:
        stages.append(_stage("train", model.name, problem, solution, deploy=False))
    for merge in spec.merges:
        stages.append(_stage("merge", merge.name, problem, solution, deploy=False))
    for deployment in spec.deployments:
        stages.append(_stage("deploy", deployment.name, problem, solution, deploy=True))
    return stages


def _stage(
    kind: str, name: str, problem: Problem, solution: Solution, deploy: bool
) -> dict[str, Any]:
    def wanted(key: str) -> bool:
        owner, _, rest = key.partition(".")
        return owner == name and any(k in rest for k in DEPLOY_KEYS) == deploy

    knobs = {k.split(".", 1)[1]: v for k, v in solution.knobs.items() if wanted(k)}
    estimates = {
        key.split(".", 1)[1]: show(value, problem.estimates[key].unit)
        for key, value in solution.values.items()
        if wanted(key) and not key.endswith((".weights", ".adapters", ".runtime"))
    }
    stage = {"stage": f"{kind}:{name}", "kind": kind, "knobs": knobs, "estimates": estimates}
    memory = problem.training.get(name) if kind == "train" else None
    if memory is not None and solution.knobs:
        stage["memory"] = memory.to_json(solution.knobs)
    return stage
