"""Which base candidates can meet the static constraints (`base auto in [...]`).

Each candidate model `m+c` (`fmlang.ir.selection`) carries a copy of its selection model's
memory, latency, throughput and cost constraints. `drop` solves each candidate alone: its part
of the spec with the other candidates removed, encoded and solved as `verify` does. A
candidate no choice of its `auto` knobs makes feasible is dropped from the spec with a note
(FM0376) that names each constraint it misses and the numbers: the best value any allowed
choice reaches beside the bound, e.g. `qwen2_5_1_5b` dropped: memory@cpu_2core at least
3.29 GiB > 512 MiB. When no candidate survives, one error (FM0377) lists every reason. The
survivors stay in the spec, which the caller verifies, lowers and runs as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import z3

from fmlang.check.program import Program
from fmlang.diagnostics import Diagnostic, Label, Severity, Span
from fmlang.ir.nodes import Model, Spec
from fmlang.ir.selection import base_params, candidate_name, described, keep
from fmlang.verify.encode import encode
from fmlang.verify.partition import partition
from fmlang.verify.problem import Problem, Tracked
from fmlang.verify.solve import TIMEOUT_MS, solve
from fmlang.verify.spans import SpanIndex
from fmlang.verify.units import show


@dataclass(frozen=True)
class Miss:
    """One static constraint a candidate cannot meet: `memory@cpu_2core` ≥ best > bound."""

    what: str
    best: str | None
    op: str
    bound: str
    line: int | None

    def text(self) -> str:
        """`memory 3.29 GiB > 512 MiB on cpu_2core (line 57)`: the best any knob choice
        reaches, against the bound it misses."""
        metric, _, hardware = self.what.partition("@")
        where = f" on {hardware}" if hardware else ""
        line = f" (line {self.line})" if self.line else ""
        if not self.op:
            return f"{self.what}{line}"
        if self.best is None:
            return f"{metric} cannot meet {self.op} {self.bound}{where}{line}"
        missed = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}.get(self.op, "vs")
        return f"{metric} {self.best} {missed} {self.bound}{where}{line}"

    def to_json(self) -> dict[str, Any]:
        return {"constraint": self.what, "best": self.best, "op": self.op, "bound": self.bound,
                "line": self.line, "text": self.text()}  # fmt: skip


@dataclass
class Dropped:
    """What `drop` did: the pruned spec, its diagnostics and a summary per selection model
    (`verify.json`'s `selections`, what `fmc plan` lists)."""

    spec: Spec
    diagnostics: list[Diagnostic]
    selections: list[dict[str, Any]]


def drop(spec: Spec, program: Program) -> Dropped:
    """`spec` without the candidates that cannot meet the static constraints, and a note per
    dropped candidate (an error when none is left)."""
    spans = SpanIndex(program)
    out = Dropped(spec, [], [])
    for model in spec.models:
        if model.selection is None or not model.selection.candidates:
            continue
        missed = {
            key: found
            for key in model.selection.candidates
            if (found := _unservable(spec, model, key) or _misses(spec, spans, model, key))
        }
        survivors = tuple(b for b in model.selection.candidates if b not in missed)
        out.spec = keep(out.spec, model.name, survivors)
        span = model.span.to_span() if model.span else None
        out.diagnostics += [_dropped(model, base, misses, span) for base, misses in missed.items()]
        if not survivors:
            out.diagnostics.append(_none_left(model, missed, span))
        out.selections.append(_summary(spec, model, survivors, missed))
    return out


def _summary(
    spec: Spec, model: Model, survivors: tuple[str, ...], missed: dict[str, list[Miss]]
) -> dict[str, Any]:
    selection = model.selection
    assert selection is not None
    on = selection.on
    params = {k: base_params(spec, model, k) for k in survivors}
    return {
        "model": model.name,
        "select_by": selection.metric,
        "on": f"{on.dataset}.{on.split}" if on and on.split else (on.dataset if on else None),
        "lowest_wins": selection.lower_is_better,
        "candidates": [{**described(model, k), "model": candidate_name(model.name, k),
                        "params": params[k]}
                       for k in sorted(survivors, key=lambda k: (params[k] or 0, k))],
        "dropped": [{**described(model, k), "misses": [m.to_json() for m in ms]}
                    for k, ms in missed.items()],
    }  # fmt: skip


def per_candidate_rows(report_rows: list[dict[str, Any]], spec: Spec) -> None:
    """A selection model's static constraints are decided per candidate (the rows of `m+c`):
    its own rows say so instead of an `ok` with no estimate."""
    from fmlang.ir.selection import STATIC_KINDS

    selecting = {m.name for m in spec.models if m.selection is not None}
    for row in report_rows:
        if row.get("target") in selecting and row.get("kind") in STATIC_KINDS:
            row["verdict"] = "per candidate"


def _unservable(spec: Spec, model: Model, key: str) -> list[Miss]:
    """A deployed model's candidate whose adapter no server loads: a fisher_mask update is
    a sparse diff of the base's own weights (FM0357 for a model that names it)."""
    option = model.selection.option(key) if model.selection else None
    adapter = (option.adapter if option else None) or model.adapter
    deployment = next((d for d in spec.deployments if d.target == model.name), None)
    if deployment is None or adapter is None or adapter.kind != "fisher_mask":
        return []
    line = deployment.span.line if deployment.span else None
    why = (f"deploy `{deployment.name}` cannot serve it: a fisher_mask update is a sparse diff "
           "of the base weights, and the servers load PEFT adapters")  # fmt: skip
    return [Miss(why, None, "", "", line)]


def _misses(spec: Spec, spans: SpanIndex, model: Model, base: str) -> list[Miss]:
    """What candidate `base` of `model` cannot meet, solved alone; [] when it is feasible."""
    name = candidate_name(model.name, base)
    alone = keep(spec, model.name, (base,))
    part = next((p for p in partition(alone) if p.model(name) is not None), None)
    if part is None:
        return []
    problem = encode(part, spans)
    solution = solve(problem)
    if solution.feasible:
        return []
    relevant = [t for t in problem.tracked if t.constraint and t.key in solution.conflicting]
    misses = [_miss(problem, t, name) for t in relevant]
    if not misses:  # infeasible for a reason without a bound: say what the solver said
        misses = [Miss(d.message, None, "", "", None) for d in solution.diagnostics]
    return misses


def _miss(problem: Problem, tracked: Tracked, name: str) -> Miss:
    line = tracked.span.line if tracked.span else None
    found = problem.bounds.get(tracked.key)
    if found is None:  # a constraint without a numeric bound (a license): its own words
        return Miss(tracked.text, None, "", "", line)
    estimate, op, bound = found
    est = problem.estimates.get(estimate)
    what = estimate.removeprefix(f"{name}.")
    if est is None:
        return Miss(what, None, op, str(bound), line)
    best = _best(problem, est.term, "min" if op.startswith("<") else "max")
    return Miss(what, None if best is None else show(best, est.unit), op, show(bound, est.unit),
                line)  # fmt: skip


def _best(problem: Problem, term: z3.ArithRef, direction: str) -> float | None:
    """The best value of `term` the knobs' domains allow, whatever the bounds say."""
    opt = z3.Optimize()
    opt.set("timeout", TIMEOUT_MS)
    opt.add(*problem.plain, *(t.expr for t in problem.tracked if t.key.startswith("domain:")))
    (opt.minimize if direction == "min" else opt.maximize)(term)
    if opt.check() != z3.sat:
        return None
    value = opt.model().eval(term, model_completion=True)
    if z3.is_rational_value(value):
        return float(value.numerator_as_long() / value.denominator_as_long())
    return float(value.as_decimal(12).rstrip("?"))


def _dropped(model: Model, base: str, misses: list[Miss], span: Span | None) -> Diagnostic:
    reasons = "; ".join(m.text() for m in misses)
    return Diagnostic(
        Severity.NOTE,
        "FM0376",
        f"model `{model.name}`: candidate `{base}` dropped: {reasons}",
        (Label(span, f"`{base}` is not trained", True),) if span else (),
        (),
        None,
    )


def _none_left(model: Model, missed: dict[str, list[Miss]], span: Span | None) -> Diagnostic:
    notes = tuple(f"`{b}`: " + "; ".join(m.text() for m in ms) for b, ms in missed.items())
    return Diagnostic(
        Severity.ERROR,
        "FM0377",
        f"no base candidate of model `{model.name}` meets its static constraints",
        (Label(span, "nothing left to train", True),) if span else (),
        notes,
        "add a smaller candidate, relax the constraint, or choose larger hardware",
    )
