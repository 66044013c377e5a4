"""`constraints target { ... }` lines → classified `Constraint`s.

The forms, and which kind each metric is, come from the checker's table
(`check/constraints.py` FORMS), so the two never disagree; `gpu_hours`, which the checker
files under cost, is its own kind here because the verifier bounds it separately.
"""

from __future__ import annotations

from fmlang.check.constraints import FORMS
from fmlang.ir import nodes as ir
from fmlang.ir.build_expr import build_expr
from fmlang.ir.values import Scope, data_ref, name_of, quantity, scalar, span_of
from fmlang.syntax import ast

FLIPPED = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "==", "!=": "!="}
PLAIN_RATIO_KINDS = ("quality", "fairness")  # a plain number bounds a fraction 0..1
DEFAULT_LATENCY_STAT = "p50"


def build_constraints(node: ast.Constraints, scope: Scope) -> tuple[ir.Constraint, ...]:
    return tuple(build_constraint(item, node.target.name, scope) for item in node.items)


def build_constraint(node: ast.Constraint, target: str, scope: Scope) -> ir.Constraint:
    expr = node.expr
    condition = build_expr(expr, scope)
    base: dict[str, object] = {"target": target, "condition": condition, "span": span_of(node)}
    if node.confidence is not None:  # `with confidence 95%` → 0.95 (checked in 50%..100%)
        level = quantity(node.confidence.level, "ratio")
        base["confidence"] = round(level.value, 12) if level is not None else None  # not .95…01
    if isinstance(expr, ast.Binary) and expr.op in ("in", "allows"):
        values = _values(expr.right, scope)
        metric = name_of(expr.left) or "?"
        kind = {"no_pii": "privacy", "license": "license"}.get(metric, "other")
        return ir.Constraint.model_validate(
            {**base, "kind": kind, "metric": metric, "op": expr.op, "values": values}
        )
    if isinstance(expr, ast.Binary) and expr.op in FLIPPED:
        metric_expr, op, bound = expr.left, expr.op, expr.right
        if _is_bound(scope.deref(metric_expr)) and not _is_bound(scope.deref(bound)):
            metric_expr, op, bound = bound, FLIPPED[op], metric_expr
        return _bounded(base, metric_expr, op, bound, node.on, scope)
    return ir.Constraint.model_validate({**base, "kind": "other", "metric": "?", "op": "?"})


def _is_bound(expr: ast.Expr) -> bool:
    if isinstance(expr, ast.Unary):
        return _is_bound(expr.operand)
    return isinstance(expr, ast.Number | ast.Quantity)


def _values(expr: ast.Expr, scope: Scope) -> tuple[str, ...]:
    expr = scope.deref(expr)
    items = expr.items if isinstance(expr, ast.ListExpr) else (expr,)
    return tuple(v for v in (name_of(scope.deref(i)) for i in items) if v is not None)


def _bounded(
    base: dict[str, object],
    metric_expr: ast.Expr,
    op: str,
    bound_expr: ast.Expr,
    on: ast.Expr | None,
    scope: Scope,
) -> ir.Constraint:
    name, stat, options = _metric(metric_expr, scope)
    form = FORMS.get(name)
    kind = "other" if form is None else ("gpu_hours" if name == "gpu_hours" else form.kind)
    metric = (stat or DEFAULT_LATENCY_STAT) if name == "latency" else name
    if stat is not None and name != "latency":
        options = (*options, ir.Option(name="stat", value=stat))
    plain = "ratio" if kind in PLAIN_RATIO_KINDS and name != "perplexity" else "number"
    hardware, data, on_options = _on(on, scope)
    return ir.Constraint.model_validate({
        **base, "kind": kind, "metric": metric, "op": op,
        "bound": quantity(scope.deref(bound_expr), plain),
        "on_hardware": hardware, "on_data": data, "options": (*options, *on_options),
    })  # fmt: skip


def _metric(expr: ast.Expr, scope: Scope) -> tuple[str, str | None, tuple[ir.Option, ...]]:
    """`latency.p95` → (latency, p95); `f1(spam)` → (f1, class=spam);
    `max_gap(accuracy, by = video)` → (max_gap, of=accuracy, by=video)."""
    stat = None
    if isinstance(expr, ast.Attribute):
        stat, expr = expr.attr.name, expr.value
    options: list[ir.Option] = []
    if isinstance(expr, ast.Call):
        head = name_of(expr.func) or "?"
        positional = "of" if head == "max_gap" else "class"
        for index, arg in enumerate(expr.args):
            key = arg.name.name if arg.name is not None else (
                positional if index == 0 else f"arg{index}")  # fmt: skip
            value = scalar(scope.deref(arg.value))
            if value is not None:
                options.append(ir.Option(name=key, value=value, span=span_of(arg)))
        expr = expr.func
    if isinstance(expr, ast.Attribute) and stat is None:
        stat, expr = expr.attr.name, expr.value
    return name_of(expr) or "?", stat, tuple(options)


def _on(
    on: ast.Expr | None, scope: Scope
) -> tuple[str | None, ir.DataRef | None, tuple[ir.Option, ...]]:
    """What `on …` names: a hardware profile, data (`ds`, `ds.split`), or something else."""
    if on is None:
        return None, None, ()
    hardware: str | None = None
    data: ir.DataRef | None = None
    others: list[ir.Option] = []
    items = on.items if isinstance(on, ast.ListExpr) else (on,)
    for item in items:
        name = name_of(scope.deref(item))
        symbol = scope.lookup(name.split(".")[0]) if name else None
        if symbol is not None and symbol.kind == "hardware" and hardware is None:
            hardware = symbol.name
        elif symbol is not None and symbol.kind in ("dataset", "labels") and data is None:
            data = data_ref(item, scope)
        elif name is not None:
            others.append(ir.Option(name="on", value=name, span=span_of(item)))
    return hardware, data, tuple(others)
