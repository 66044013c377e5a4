"""Runtime gates: the constraints only a trained model can answer (accuracy, F1, perplexity,
fairness gaps, measured latency), checked against what the run measured.

A miss is an error at the constraint's line that shows measured against required, so the
build fails; a gate with nothing measured to compare (no evaluation on that split, a GPU
profile on a CPU machine) is a warning that says why.

Every gated model metric comes with a confidence interval (`confidence.py`: Wilson for
accuracy, a seeded bootstrap for F1, gaps and perplexity). A constraint written `with
confidence 95%` passes only if the whole interval at that level clears the bound (its lower
end for `>=`, its upper end for `<=`); without it the point estimate decides, as before,
and the 95% interval is still reported. Data too small for the gate to mean anything (an
interval wider than every passing value; per group for a fairness gap) is a warning
(FM0862) that names the split or group, its rows and the interval's width.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fmlang.backends import confidence as ci
from fmlang.backends.confidence import DEFAULT_CONFIDENCE, Interval
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
    interval: Interval | None = None
    too_small: tuple[tuple[str, Interval], ...] = ()  # (split or group, its interval)

    def to_json(self) -> dict[str, Any]:
        c, interval = self.constraint, self.interval
        return {
            "line": c.span.line if c.span else None,
            "metric": c.metric,
            "op": c.op,
            "bound": c.bound.value if c.bound else None,
            "measured": self.measured,
            "passed": self.passed,
            "why": self.why,
            "ci_low": interval.low if interval else None,
            "ci_high": interval.high if interval else None,
            "confidence": interval.confidence if interval else None,
            "n": interval.n if interval else None,
            "method": interval.method if interval else None,
            "decided_by": "interval" if c.confidence is not None else "estimate",
            **_grouping(c),
            "too_small": [
                {"group": name, "n": i.n, "ci_low": i.low, "ci_high": i.high, "width": i.width}
                for name, i in self.too_small
            ],
        }


def _grouping(c: Constraint) -> dict[str, str | None]:
    """A fairness gate's split, column and metric, so its record names the groups it
    compared (`run/report.html` draws them against the bound)."""
    if c.kind != "fairness":
        return {}
    options = {o.name: o.value for o in c.options}
    return {"split": _split_name(c), "by": str(options.get("by")),
            "of": str(options.get("of", "accuracy"))}  # fmt: skip


def evaluate_gates(spec: Spec, target: str, metrics: dict[str, Any]) -> list[GateResult]:
    return [
        _gate(c, metrics)
        for c in spec.constraints_on(target)
        if c.kind in ("quality", "fairness", "latency") and c.bound is not None
    ]


def check_gates(spec: Spec, target: str, metrics: dict[str, Any]) -> list[Diagnostic]:
    """The gates' diagnostics; records every gate's result in `metrics["gates"]`."""
    gates = evaluate_gates(spec, target, metrics)
    metrics["gates"] = [g.to_json() for g in gates]
    failed = [_diagnostic(g, target) for g in gates if g.passed is not True]
    return failed + [_too_small(g) for g in gates if g.too_small]


def _gate(c: Constraint, metrics: dict[str, Any]) -> GateResult:
    assert c.bound is not None
    if c.kind == "latency":
        latency, why = _latency(c, metrics)
        passed = None if latency is None else OPS[c.op](latency, c.bound.value)
        return GateResult(c, latency, passed, why)
    values, why = _split_values(c, metrics)
    if values is None:
        return GateResult(c, None, None, why)
    level = c.confidence if c.confidence is not None else DEFAULT_CONFIDENCE
    if c.kind == "fairness":
        measured, why, interval, small = _fairness(c, values, level)
    else:
        measured, why, interval = _quality(c, values, level)
        split = _split_name(c) or "the evaluation split"
        wide = interval is not None and ci.too_wide(interval, c.op, c.bound.value, c.metric)
        small = ((split, interval),) if wide and interval is not None else ()
    passed, why = _verdict(c, measured, interval, why)
    return GateResult(c, measured, passed, why, interval, small)


def _verdict(
    c: Constraint, measured: float | None, interval: Interval | None, why: str
) -> tuple[bool | None, str]:
    """The point estimate against the bound, or with `with confidence` the interval's end
    on the failing side (the lower end for `>=`, the upper end for `<=`)."""
    assert c.bound is not None
    if measured is None:
        return None, why
    if c.confidence is None:
        return OPS[c.op](measured, c.bound.value), why
    if interval is None:
        return None, (
            "this run kept no per-row results to compute an interval from: rerun "
            "`fmc run --force` to evaluate again"
        )
    end = interval.low if c.op in (">=", ">") else interval.high
    return OPS[c.op](end, c.bound.value), why


def _split_name(c: Constraint) -> str | None:
    if c.on_data is None:
        return None
    return f"{c.on_data.dataset}.{c.on_data.split}" if c.on_data.split else c.on_data.dataset


def _split_values(c: Constraint, metrics: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    split = _split_name(c)
    evaluated = metrics.get("eval", {})
    values = evaluated.get(split) if split else next(iter(evaluated.values()), None)
    if values is None:
        return None, f"the model was not evaluated on `{split}`: add it to `eval {{ on = [...] }}`"
    return values, ""


def _fairness(
    c: Constraint, values: dict[str, Any], level: float
) -> tuple[float | None, str, Interval | None, tuple[tuple[str, Interval], ...]]:
    assert c.bound is not None
    options = {o.name: o.value for o in c.options}
    by, of = str(options.get("by")), str(options.get("of", "accuracy"))
    grouped = values.get("by", {}).get(by, {})
    gap = grouped.get("max_gap", {}).get(of)
    if gap is None:
        return None, f"no `{of}` gap by `{by}`: add `{by}` to `eval {{ by = [...] }}`", None, ()
    groups = grouped.get("groups", {})
    interval = ci.gap_interval(groups, of, level)
    small = tuple(
        (f"{by} = {name}", i)
        for name, i in ci.group_intervals(groups, of, level).items()
        if ci.too_wide(i, c.op, c.bound.value, c.metric)
    )
    return float(gap), "", interval, small


def _quality(
    c: Constraint, values: dict[str, Any], level: float
) -> tuple[float | None, str, Interval | None]:
    options = {o.name: o.value for o in c.options}
    key, why = _metric_key(c.metric, options.get("class"), values)
    value = values.get(key) if "[" not in key else _class_score(key, values)
    if not isinstance(value, (int, float)):
        return None, why or f"no `{c.metric}`", None
    if key == "perplexity":
        return float(value), "", ci.perplexity_interval(values.get("per_row"), level)
    return float(value), "", ci.classification_interval(values, key, level)


def _metric_key(metric: str, cls: Any, values: dict[str, Any]) -> tuple[str, str]:
    """The scalar the gate reads: `accuracy`, `macro_f1`, `perplexity`, or a class's score
    `f1[spam]` (the class named, else the positive class of two, else macro F1 for f1)."""
    if metric not in ("f1", "precision", "recall"):
        return metric, ""
    classes = list(values.get("per_class", {}))
    chosen = str(cls) if cls is not None else (classes[1] if len(classes) == 2 else None)
    if chosen is None:
        return ("macro_f1", "") if metric == "f1" else (metric, "")
    return f"{metric}[{chosen}]", "" if chosen in classes else f"no class `{chosen}`"


def _class_score(key: str, values: dict[str, Any]) -> Any:
    metric, _, cls = key.partition("[")
    return values.get("per_class", {}).get(cls.rstrip("]"), {}).get(metric)


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
    interval = gate.interval
    shown = f"{measured} {interval.show()}" if interval else measured
    required = f"required {c.op} {bound}"
    if c.confidence is not None and interval is not None:
        end = "lower" if c.op in (">=", ">") else "upper"
        required = (
            f"required its {end} end {c.op} {bound} (with confidence {_percent(c.confidence)})"
        )
    return error(
        "FM0860",
        f"gate failed: `{target}` measured {c.metric} {measured}{_about(interval)}, {required}",
        span,
        f"measured {shown}",
        help="improve the model or its data (more or better labeling functions, more "
        "epochs, more evaluation rows for a tighter interval), or relax the bound if it was "
        "too strict",
    )


def _about(interval: Interval | None) -> str:
    if interval is None:
        return ""
    how = "Wilson" if interval.method == "wilson" else "bootstrap"
    level = _percent(interval.confidence)
    return f", {level} interval {interval.show()} ({how}, {interval.n} rows)"


def _too_small(gate: GateResult) -> Diagnostic:
    c = gate.constraint
    assert c.bound is not None
    low, high = ci.passing_range(c.op, c.bound.value, c.metric)
    parts = ", ".join(
        f"`{name}` ({i.n} rows, interval {i.show()}, {_show(i.width, c)} wide)"
        for name, i in gate.too_small
    )
    level = _percent(gate.too_small[0][1].confidence)
    passing = f"{_show(low, c)}..{_show(high, c) if high != float('inf') else '∞'}"
    return warning(
        "FM0862",
        f"too few rows for this gate to mean anything: {parts}: "
        f"{'each' if len(gate.too_small) > 1 else 'its'} {level} interval is wider than "
        f"every value that passes ({passing})",
        c.span.to_span() if c.span else None,
        "cannot tell a passing model from a failing one",
        help="evaluate on more rows (a larger split, or fewer, larger groups), or loosen the "
        "bound; the interval narrows with the square root of the rows",
    )


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4f}".rstrip("0").rstrip(".") + "%"


def _show(value: float, c: Constraint) -> str:
    if c.kind == "latency":
        return f"{value * 1000:.1f} ms"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def interval_text(gate: dict[str, Any]) -> str:
    """` [0.8906, 0.9627] at 95%` for a gate's JSON (`GateResult.to_json`), with a note when
    the point estimate decided but the interval straddles the bound; "" without one."""
    low, high, level = gate.get("ci_low"), gate.get("ci_high"), gate.get("confidence")
    if low is None or high is None or level is None:
        return ""
    text = f" [{low:.4g}, {high:.4g}] at {_percent(level)}"
    bound = gate.get("bound")
    if gate.get("decided_by") == "estimate" and bound is not None and low <= bound <= high:
        text += " (inconclusive: the interval includes the bound)"
    return text
