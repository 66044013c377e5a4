"""Constraints: each line is classified into one kind and its units and references checked.

The forms (see docs/reference.md):
  memory <= 512MiB on cpu_2core          latency.p95 <= 30ms on cpu_2core
  throughput >= 20req/s on a10g          cost <= 3USD/h          gpu_hours <= 10
  accuracy >= 0.9 on data.test           f1(spam) >= 0.85 on data.test
  perplexity <= 12 on data.test          max_gap(accuracy, by = video) <= 0.08 on data.test
  no_pii in training_data                dp_epsilon <= 8 on data
  license allows commercial              license in ["apache-2.0", "mit"]
A quality or fairness gate may end in `with confidence 95%` (a level in 50%..100%).
"""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.check.context import Ctx, describe, dotted
from fmlang.check.program import Program
from fmlang.check.settings import check_data_ref, check_quantity
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast


@dataclass(frozen=True)
class Form:
    kind: str
    ops: tuple[str, ...]
    dimensions: tuple[str, ...]  # () for a plain number
    on: str | None  # "hardware", "data", "dataset" or None
    example: str


QUALITY = ("accuracy", "precision", "recall", "f1", "macro_f1")
LATENCY_STATS = ("p50", "p90", "p95", "p99", "mean")
FLOW_SINKS = ("training_data", "models", "endpoints", "outputs")
FORMS: dict[str, Form] = {
    "memory": Form("memory", ("<=", "<"), ("bytes",), "hardware", "memory <= 8GiB on a10g"),
    "latency": Form(
        "latency", ("<=", "<"), ("time",), "hardware", "latency.p95 <= 30ms on cpu_2core"
    ),
    "throughput": Form(
        "throughput",
        (">=", ">"),
        ("request_rate", "token_rate"),
        "hardware",
        "throughput >= 20req/s on a10g",
    ),
    "cost": Form("cost", ("<=", "<"), ("money_rate", "money"), None, "cost <= 3USD/h"),
    "gpu_hours": Form("cost", ("<=", "<"), (), None, "gpu_hours <= 10"),
    **{
        q: Form("quality", (">=", ">"), ("ratio",), "data", f"{q} >= 0.9 on data.test")
        for q in QUALITY
    },
    "perplexity": Form("quality", ("<=", "<"), (), "data", "perplexity <= 12 on data.test"),
    "max_gap": Form(
        "fairness",
        ("<=", "<"),
        ("ratio",),
        "data",
        "max_gap(accuracy, by = group) <= 0.08 on data.test",
    ),
    "dp_epsilon": Form("privacy", ("<=", "<"), (), "dataset", "dp_epsilon <= 8 on data"),
}


def check_constraints(program: Program) -> None:
    for source in program.user_files():
        ctx = Ctx(program, source)
        for item in source.module.items:
            if isinstance(item, ast.Constraints):
                ctx.resolve(item.target, ("model", "merge"))
                for constraint in item.items:
                    _check_constraint(ctx, constraint)


def _check_constraint(ctx: Ctx, constraint: ast.Constraint) -> None:
    expr = constraint.expr
    if constraint.confidence is not None:
        _check_confidence(ctx, constraint, constraint.confidence)
    if isinstance(expr, ast.Binary) and expr.op == "in" and _is(expr.left, "no_pii"):
        _check_flow(ctx, expr.right)
        _no_on(ctx, constraint)
    elif isinstance(expr, ast.Binary) and _is(expr.left, "license"):
        _check_license(ctx, expr)
        _no_on(ctx, constraint)
    elif isinstance(expr, ast.Binary) and expr.op in ("<=", "<", ">=", ">"):
        _check_bound(ctx, constraint, expr)
    else:
        _unknown(ctx, expr)


def _check_confidence(ctx: Ctx, constraint: ast.Constraint, clause: ast.Confidence) -> None:
    """`with confidence 95%`: a level strictly between 50% and 100%, on a gate the run
    measures with an interval (a quality metric or a fairness gap)."""
    if clause.word.name != "confidence":
        ctx.error(
            "FM0347",
            f"unknown `with {clause.word.name}`",
            clause.word.span,
            "expected `confidence`",
            "write `with confidence 95%`",
        )
        return
    level = clause.level
    value = level.value / 100 if isinstance(level, ast.Quantity) and level.unit == "%" else None
    value = level.value if isinstance(level, ast.Number) else value
    if value is None or not 0.5 < value < 1:
        shown = f"`{level.text}`" if isinstance(level, ast.Number | ast.Quantity) else "this"
        ctx.error(
            "FM0348",
            f"a confidence level is a percentage between 50% and 100%, not {shown}",
            level.span,
            "out of range" if value is not None else "expected a percentage",
            "write `with confidence 95%` (or 90%, 99%)",
        )
    expr = constraint.expr
    sides = (expr.left, expr.right) if isinstance(expr, ast.Binary) else (expr,)
    kinds = {FORMS[n].kind for n, _ in map(_metric_name, sides) if n in FORMS}
    if not kinds & {"quality", "fairness"}:
        ctx.error(
            "FM0349",
            "only a gate on a model's evaluation has a confidence interval",
            clause.span,
            "no interval to check",
            "`with confidence` applies to accuracy, precision, recall, f1, macro_f1, "
            "perplexity and max_gap gates; remove it here",
        )


def _is(expr: ast.Expr, name: str) -> bool:
    return isinstance(expr, ast.Name) and expr.id == name


def _unknown(ctx: Ctx, expr: ast.Expr) -> None:
    ctx.error(
        "FM0350",
        "not a constraint fmc understands",
        expr.span,
        "unknown constraint",
        "write a bound such as `memory <= 8GiB on a10g`, `accuracy >= 0.9 on data.test`, "
        "`no_pii in training_data` or `license allows commercial` (see `fmc explain FM0350`)",
    )


def _metric_name(metric: ast.Expr) -> tuple[str | None, ast.Expr]:
    head = metric.func if isinstance(metric, ast.Call) else metric
    if isinstance(head, ast.Attribute) and isinstance(head.value, ast.Name):
        return head.value.id, head
    if isinstance(head, ast.Name):
        return head.id, head
    return None, head


def _check_bound(ctx: Ctx, constraint: ast.Constraint, expr: ast.Binary) -> None:
    name, head = _metric_name(expr.left)
    form = FORMS.get(name or "")
    if name is None or form is None:
        ctx.error(
            "FM0350",
            f"unknown constraint metric `{name or describe(expr.left)}`",
            expr.left.span,
            "unknown metric",
            did_you_mean(name or "", FORMS) or f"metrics: {', '.join(sorted(FORMS))}",
        )
        return
    if expr.op not in form.ops:
        ctx.error(
            "FM0351",
            f"`{name}` is bounded with `{form.ops[0]}`",
            expr.span,
            f"`{expr.op}` makes no sense for {name}",
            f"write `{form.example}`",
        )
    _check_metric_shape(ctx, name, head, expr.left)
    if form.dimensions:
        if not any(_has_dimension(expr.right, d) for d in form.dimensions):
            check_quantity(ctx, expr.right, form.dimensions[0], f"`{name}`")
    elif not isinstance(expr.right, ast.Number):
        ctx.error(
            "FM0303",
            f"`{name}` is bounded by a plain number",
            expr.right.span,
            "expected a number",
            f"write `{form.example}`",
        )
    _check_on(ctx, constraint, form, name)


def _has_dimension(value: ast.Expr, dimension: str) -> bool:
    from fmlang.check.units import UNIT_DIMENSION

    if isinstance(value, ast.Number):
        return dimension == "ratio" and 0 <= value.value <= 1
    return isinstance(value, ast.Quantity) and UNIT_DIMENSION.get(value.unit) == dimension


def _check_metric_shape(ctx: Ctx, name: str, head: ast.Expr, metric: ast.Expr) -> None:
    if name == "latency":
        stat = head.attr.name if isinstance(head, ast.Attribute) else None
        if stat not in LATENCY_STATS:
            ctx.error(
                "FM0351",
                "latency names a statistic",
                head.span,
                "which latency?",
                did_you_mean(stat or "", LATENCY_STATS)
                or f"write `latency.p95` (or {', '.join(LATENCY_STATS)})",
            )
    if name == "max_gap":
        _check_gap(ctx, metric)
    elif isinstance(metric, ast.Call) and name not in ("precision", "recall", "f1"):
        ctx.error("FM0351", f"`{name}` takes no arguments", metric.span, "unexpected arguments")


def _check_gap(ctx: Ctx, metric: ast.Expr) -> None:
    if not isinstance(metric, ast.Call):
        ctx.error(
            "FM0351",
            "`max_gap` needs a metric and a group column",
            metric.span,
            "missing arguments",
            "write `max_gap(accuracy, by = column)`",
        )
        return
    positional = [a for a in metric.args if a.name is None]
    by = [a for a in metric.args if a.name is not None and a.name.name == "by"]
    if (
        len(positional) != 1
        or not isinstance(positional[0].value, ast.Name)
        or positional[0].value.id not in QUALITY
    ):
        ctx.error(
            "FM0351",
            "`max_gap` compares one quality metric across groups",
            metric.span,
            "which metric?",
            f"the first argument is one of {', '.join(QUALITY)}",
        )
    if len(by) != 1 or not isinstance(by[0].value, ast.Name):
        ctx.error(
            "FM0351",
            "`max_gap` needs the protected column to group by",
            metric.span,
            "no `by = column`",
            "write `max_gap(accuracy, by = column)`",
        )


def _check_on(ctx: Ctx, constraint: ast.Constraint, form: Form, name: str) -> None:
    on = constraint.on
    if form.on is None:
        _no_on(ctx, constraint)
        return
    if on is None:
        where = {
            "hardware": "a hardware profile",
            "data": "an evaluation split",
            "dataset": "a dataset",
        }[form.on]
        ctx.error(
            "FM0352",
            f"`{name}` needs `on` {where}",
            constraint.expr.span,
            f"on which {form.on}?",
            f"write `{form.example}`",
        )
        return
    if form.on == "hardware":
        if isinstance(on, ast.Name):
            ctx.resolve(on, ("hardware",))
        else:
            ctx.error("FM0352", "`on` names a hardware profile", on.span, "expected a name")
    else:
        check_data_ref(ctx, on, "on", labels_ok=False)
        if form.on == "dataset" and isinstance(on, ast.Attribute):
            ctx.error(
                "FM0352",
                "a DP budget is per dataset, not per split",
                on.span,
                "name the dataset alone",
            )


def _no_on(ctx: Ctx, constraint: ast.Constraint) -> None:
    if constraint.on is not None:
        ctx.error(
            "FM0352",
            "this constraint takes no `on`",
            constraint.on.span,
            "unexpected `on`",
            "remove `on …`",
        )


def _check_flow(ctx: Ctx, sink: ast.Expr) -> None:
    names = dotted(sink)
    if names is None or len(names) != 1 or names[0].name not in FLOW_SINKS:
        given = names[0].name if names else ""
        ctx.error(
            "FM0353",
            "`no_pii in` names where personal data must not flow",
            sink.span,
            "unknown flow",
            did_you_mean(given, FLOW_SINKS) or f"choose one of {', '.join(FLOW_SINKS)}",
        )


def _check_license(ctx: Ctx, expr: ast.Binary) -> None:
    if expr.op == "allows":
        uses = expr.right.items if isinstance(expr.right, ast.ListExpr) else (expr.right,)
        for use in uses:
            if not isinstance(use, ast.Name) or use.id not in ("research", "commercial"):
                ctx.error(
                    "FM0354",
                    "`license allows` takes `research` or `commercial`",
                    use.span,
                    "unknown use",
                )
    elif expr.op == "in":
        items = expr.right.items if isinstance(expr.right, ast.ListExpr) else ()
        if not items or not all(isinstance(i, ast.String) for i in items):
            ctx.error(
                "FM0354",
                "`license in` takes a list of license ids as strings",
                expr.right.span,
                "expected strings",
                'write `license in ["apache-2.0"]`',
            )
    else:
        ctx.error(
            "FM0354",
            f"`license {expr.op} …` is not a license constraint",
            expr.span,
            "unknown form",
            'write `license allows commercial` or `license in ["mit"]`',
        )
