"""Runtime gates: the constraints only a trained model can answer (accuracy, F1, perplexity,
fairness gaps, measured latency), checked against what the run measured.

A miss is an error at the constraint's line that shows measured against required, so the
build fails; a gate with nothing measured to compare (no evaluation on that split, a GPU
profile on a CPU machine) is a warning that says why.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fmlang.diagnostics import Diagnostic, error, warning
from fmlang.ir.nodes import Constraint, Spec

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
PERCENTILES = {"p50": "p50_ms", "p95": "p95_ms", "mean": "mean_ms"}


@dataclass(frozen=True)
class GateResult:
    constraint: Constraint
    measured: float | None
    passed: bool | None  # None: not measured
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        c = self.constraint
        return {
            "line": c.span.line if c.span else None,
            "metric": c.metric,
            "op": c.op,
            "bound": c.bound.value if c.bound else None,
            "measured": self.measured,
            "passed": self.passed,
            "why": self.why,
        }


def evaluate_gates(spec: Spec, target: str, metrics: dict[str, Any]) -> list[GateResult]:
    results = []
    for c in spec.constraints_on(target):
        if c.kind not in ("quality", "fairness", "latency") or c.bound is None:
            continue
        measured, why = _measured(c, metrics)
        passed = None if measured is None else OPS[c.op](measured, c.bound.value)
        results.append(GateResult(c, measured, passed, why))
    return results


def check_gates(spec: Spec, target: str, metrics: dict[str, Any]) -> list[Diagnostic]:
    """The gates' diagnostics; records every gate's result in `metrics["gates"]`."""
    gates = evaluate_gates(spec, target, metrics)
    metrics["gates"] = [g.to_json() for g in gates]
    return [_diagnostic(g, target) for g in gates if g.passed is not True]


def _measured(c: Constraint, metrics: dict[str, Any]) -> tuple[float | None, str]:
    if c.kind == "latency":
        return _latency(c, metrics)
    split = f"{c.on_data.dataset}.{c.on_data.split}" if c.on_data and c.on_data.split else None
    split = split or (c.on_data.dataset if c.on_data else None)
    evaluated = metrics.get("eval", {})
    values = evaluated.get(split) if split else next(iter(evaluated.values()), None)
    if values is None:
        return None, f"the model was not evaluated on `{split}`: add it to `eval {{ on = [...] }}`"
    options = {o.name: o.value for o in c.options}
    if c.kind == "fairness":
        by, of = str(options.get("by")), str(options.get("of", "accuracy"))
        gap = values.get("by", {}).get(by, {}).get("max_gap", {}).get(of)
        why = f"no `{of}` gap by `{by}`: add `{by}` to `eval {{ by = [...] }}`"
        return (float(gap), "") if gap is not None else (None, why)
    return _quality(c.metric, options.get("class"), values)


def _quality(metric: str, cls: Any, values: dict[str, Any]) -> tuple[float | None, str]:
    per_class = values.get("per_class", {})
    if metric in ("f1", "precision", "recall"):
        classes = list(per_class)
        chosen = str(cls) if cls is not None else (classes[1] if len(classes) == 2 else None)
        if chosen is None:
            return values.get("macro_f1") if metric == "f1" else None, ""
        score = per_class.get(chosen, {}).get(metric)
        return (float(score), "") if score is not None else (None, f"no class `{chosen}`")
    value = values.get(metric)
    return (float(value), "") if isinstance(value, (int, float)) else (None, f"no `{metric}`")


def _latency(c: Constraint, metrics: dict[str, Any]) -> tuple[float | None, str]:
    measured = metrics.get("latency", {}).get(c.on_hardware or "", {})
    if not measured.get("measured"):
        return None, f"latency on `{c.on_hardware}` cannot be measured on this machine"
    load = measured.get("load") or {}
    if load.get("loaded"):
        return None, (
            f"latency on `{c.on_hardware}` was measured while other processes kept "
            f"{load['other_cores']:.1f} of {load['cores']} cores busy; rerun `fmc run --force` "
            "on an idle machine to check it"
        )
    key = PERCENTILES.get(c.metric, "p95_ms")
    return float(measured[key]) / 1000.0, ""


def _diagnostic(gate: GateResult, target: str) -> Diagnostic:
    c = gate.constraint
    span = c.span.to_span() if c.span else None
    bound = _show(c.bound.value if c.bound else 0.0, c)
    if gate.passed is None:
        return warning("FM0861", f"gate not checked: {gate.why}", span, "not measured")
    measured = _show(gate.measured or 0.0, c)
    return error(
        "FM0860",
        f"gate failed: `{target}` measured {c.metric} {measured}, required {c.op} {bound}",
        span,
        f"measured {measured}",
        help="improve the model or its data (more or better labeling functions, more "
        "epochs), or relax the bound if it was too strict",
    )


def _show(value: float, c: Constraint) -> str:
    if c.kind == "latency":
        return f"{value * 1000:.1f} ms"
    return f"{value:.4f}".rstrip("0").rstrip(".")
