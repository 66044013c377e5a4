"""Solve: feasibility with unsat cores, knob choice with z3.Optimize, the smallest fix."""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from fmlang.diagnostics import Diagnostic, Fix, Label, Severity
from fmlang.verify.bound_fix import bound_fix
from fmlang.verify.problem import Problem, Tracked
from fmlang.verify.units import show

TIMEOUT_MS = 10_000
MAX_CONFLICTS = 8
CODE_BY_PREFIX = {
    "no_pii": "FM0602", "public": "FM0602", "budget": "FM0603", "access": "FM0604",
    "license": "FM0605", "merge": "FM0606", "maxrank": "FM0607", "fair": "FM0608",
}  # fmt: skip
RESOURCE_CODE = "FM0601"
UNKNOWN_CODE = "FM0609"


@dataclass
class Solution:
    feasible: bool
    knobs: dict[str, int | str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # estimate key → value
    diagnostics: list[Diagnostic] = field(default_factory=list)
    conflicting: frozenset[str] = frozenset()  # tracked keys in some conflict


def _solver(problem: Problem, skip: set[str]) -> tuple[z3.Solver, dict[str, Tracked]]:
    solver = z3.Solver()
    solver.set("timeout", TIMEOUT_MS)
    solver.set("core.minimize", True)
    solver.add(*problem.plain)
    by_name = {}
    for index, item in enumerate(problem.tracked):
        if item.key in skip:
            continue
        label = z3.Bool(f"t{index}")
        by_name[str(label)] = item
        solver.assert_and_track(item.expr, label)
    return solver, by_name


def solve(problem: Problem) -> Solution:
    if problem.refusals:
        return Solution(False, diagnostics=list(problem.refusals))
    diagnostics: list[Diagnostic] = []
    skip: set[str] = set()
    for _ in range(MAX_CONFLICTS):
        solver, by_name = _solver(problem, skip)
        verdict = solver.check()
        if verdict == z3.sat:
            break
        if verdict == z3.unknown:
            diagnostics.append(_unknown(solver.reason_unknown()))
            return Solution(False, diagnostics=diagnostics)
        core = [by_name[str(c)] for c in solver.unsat_core()]
        diagnostics.append(explain(problem, core, skip))
        relaxable = [t.key for t in core if t.constraint] or [t.key for t in core]
        skip.update(relaxable)
    if diagnostics:
        rest = optimise(problem, skip)  # estimates for the constraints in no conflict
        return Solution(False, rest.knobs, rest.values, diagnostics, frozenset(skip))
    return optimise(problem)


def optimise(problem: Problem, skip: set[str] | None = None) -> Solution:
    skip = skip or set()
    opt = z3.Optimize()
    opt.set("timeout", TIMEOUT_MS)
    opt.add(*problem.plain, *(t.expr for t in problem.tracked if t.key not in skip))
    # Every choice stays inside its domain, even when the assertion that pinned a fixed
    # knob was set aside with a conflict.
    opt.add(*(z3.And(c.var >= 0, c.var < len(c.values)) for c in problem.choices.values()))
    for direction, term in problem.objectives:
        (opt.minimize if direction == "min" else opt.maximize)(term)
    if opt.check() != z3.sat:
        return Solution(False, diagnostics=[_unknown(opt.reason_unknown())])
    model = opt.model()
    knobs = {name: c.value_in(model) for name, c in problem.choices.items()}
    values = {
        key: _number(model.eval(e.term, model_completion=True))
        for key, e in problem.estimates.items()
    }
    return Solution(True, knobs, values)


def _number(value: z3.ExprRef) -> float:
    if z3.is_rational_value(value):
        return float(value.numerator_as_long() / value.denominator_as_long())
    return float(value.as_decimal(12).rstrip("?"))


def _unknown(reason: str) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR,
        UNKNOWN_CODE,
        f"the solver could not decide the constraints ({reason})",
        (),
        (),
        "simplify `auto` domains (fewer choices) and run again",
    )


def explain(problem: Problem, core: list[Tracked], skip: set[str]) -> Diagnostic:
    """One diagnostic for one conflict: a label on every line, the numbers, the fix."""
    code = next(
        (
            CODE_BY_PREFIX[t.key.split(":")[0]]
            for t in core
            if t.key.split(":")[0] in CODE_BY_PREFIX
        ),
        RESOURCE_CODE,
    )
    core = sorted(core, key=_where)
    constraints = [t for t in core if t.constraint] or core
    notes = tuple(n for t in constraints if (n := _numbers(problem, t)) is not None)
    notes += tuple(n for t in core if t.key in problem.advice for n in problem.advice[t.key]())
    labels = _labels(core)
    first = constraints[0].text
    message = (
        "these constraints cannot all hold: " + first
        if len(core) > 1
        else "this constraint cannot hold: " + first
    )
    advice, fix = _smallest_fix(problem, core, skip)
    fixes = (fix,) if fix is not None else ()
    return Diagnostic(Severity.ERROR, code, message, labels, notes, advice, fixes)


def _where(item: Tracked) -> tuple[str, int, int, str]:
    span = item.span
    return (span.file, span.line, span.column, item.key) if span else ("~", 0, 0, item.key)


def _labels(core: list[Tracked]) -> tuple[Label, ...]:
    labels: list[Label] = []
    seen: set[tuple[str, int, int]] = set()
    ordered = sorted(core, key=lambda t: not t.constraint)
    for index, item in enumerate(ordered):
        if item.span is None:
            continue
        where = (item.span.file, item.span.line, item.span.column)
        if where in seen:
            continue
        seen.add(where)
        labels.append(Label(item.span, item.text, index == 0))
    return tuple(sorted(labels, key=lambda lb: (lb.span.file, lb.span.line, lb.span.column)))


def _best(
    problem: Problem, term: z3.ArithRef, direction: str, skip: set[str], drop: set[str]
) -> float | None:
    opt = z3.Optimize()
    opt.set("timeout", TIMEOUT_MS)
    opt.add(*problem.plain)
    opt.add(*(t.expr for t in problem.tracked if t.key not in skip | drop))
    (opt.minimize if direction == "min" else opt.maximize)(term)
    if opt.check() != z3.sat:
        return None
    return _number(opt.model().eval(term, model_completion=True))


def _numbers(problem: Problem, item: Tracked) -> str | None:
    found = problem.bounds.get(item.key)
    if found is None:
        return None
    estimate, op, bound = found
    est = problem.estimates.get(estimate)
    if est is None:
        return None
    direction = "min" if op.startswith("<") else "max"
    domains = {t.key for t in problem.tracked if not t.key.startswith("domain:")}
    best = _best(problem, est.term, direction, set(), domains)
    if best is None:
        return None
    word = "smallest" if direction == "min" else "largest"
    extra = ""
    weights = problem.estimates.get(estimate + ".weights")
    if weights is not None:
        alone = _best(problem, weights.term, "min", set(), domains)
        if alone is not None:
            extra = f" (weights alone need {show(alone, est.unit)})"
    return (
        f"`{estimate}`: the {word} value any allowed choice reaches is "
        f"{show(best, est.unit)}{extra}; the bound is {show(bound, est.unit)}"
    )


def _smallest_fix(problem: Problem, core: list[Tracked], skip: set[str]) -> tuple[str, Fix | None]:
    """The help line naming the smallest relative bound change, and that change as an edit."""
    best: tuple[float, str, Fix | None] | None = None
    for item in core:
        found = problem.bounds.get(item.key)
        if not item.constraint or found is None:
            continue
        estimate, op, bound = found
        est = problem.estimates.get(estimate)
        direction = "min" if op.startswith("<") else "max"
        needed = _best(problem, est.term, direction, skip, {item.key}) if est else None
        if est is None or needed is None or bound == 0:
            continue
        change = abs(needed - bound) / abs(bound)
        verb = "raise" if direction == "min" else "lower"
        text = (
            f"the smallest change that makes this feasible: {verb} the bound on line "
            f"{item.span.line if item.span else '?'} to {show(needed, est.unit)}"
        )
        literal = problem.bound_literals.get(item.key)
        fix = bound_fix(*literal, bound, needed, direction == "min") if literal else None
        if best is None or change < best[0]:
            best = (change, text, fix)
    if best is not None:
        return best[1], best[2]
    return "change one of the labelled lines: the spec cannot satisfy all of them at once", None
