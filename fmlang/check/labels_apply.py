"""`apply_to` in a `labels` block: the splits and datasets that the same functions and the
label model fitted on the block's own data also label, without refitting.

The settings checker has already resolved every reference (unknown dataset FM0401, unknown
split FM0404). This pass adds what only the labels block knows: a target must not be the
data the model is fitted on, nor be listed twice (FM0396), and a target from another dataset
must have every column the functions read, with the same type (FM0397). Python functions
(`python("module:function")`) read what they like: their columns are checked at run time.
"""

from __future__ import annotations

from collections.abc import Iterator

from fmlang.check.context import Ctx, dotted
from fmlang.check.datasets import live_columns
from fmlang.check.settings import setting_value
from fmlang.diagnostics import Label, error
from fmlang.syntax import ast


def check_apply_to(ctx: Ctx, labels: ast.Labels, columns: dict[str, str] | None) -> None:
    value = setting_value(labels.body, "apply_to")
    if value is None:
        return
    items = value.items if isinstance(value, ast.ListExpr) else (value,)
    own = tuple(part.name for part in labels.source)
    seen: dict[tuple[str, ...], ast.Expr] = {}
    for item in items:
        parts = dotted(item)
        if parts is None or len(parts) > 2:
            continue  # the settings checker reported it
        target = tuple(part.name for part in parts)
        if target == own:
            ctx.error(
                "FM0396",
                f"labels `{labels.name.name}` are fitted on `{'.'.join(own)}` already",
                item.span,
                "the labels' own data",
                "its labelled rows are the labels' output; list only other splits or datasets",
            )
        elif target in seen:
            ctx.report(
                error(
                    "FM0396",
                    f"`{'.'.join(target)}` is listed twice in `apply_to`",
                    item.span,
                    "listed again",
                    related=(Label(seen[target].span, "first here", False),),
                    help="remove the repeated entry",
                )
            )
        else:
            seen[target] = item
            if columns is not None and target[0] != own[0]:
                _check_columns(ctx, labels, item, parts[0], columns)


def _check_columns(ctx: Ctx, labels: ast.Labels, item: ast.Expr, dataset: ast.Ident,
                   columns: dict[str, str]) -> None:  # fmt: skip
    symbol = ctx.lookup(dataset.name)
    if symbol is None or not isinstance(symbol.node, ast.Dataset):
        return
    theirs = live_columns(symbol.node)
    for lf in labels.body:
        if not isinstance(lf, ast.LabelingFunction):
            continue
        for name in sorted(set(_names(lf.expr)) & set(columns)):
            found = theirs.get(name)
            if found == columns[name]:
                continue
            what = "has no column" if found is None else f"has column `{name}` as {found}, not"
            ctx.report(
                error(
                    "FM0397",
                    f"dataset `{dataset.name}` {what} `{name}`"
                    + ("" if found is None else f" {columns[name]}")
                    + f", which labeling function `{lf.name.name}` reads",
                    item.span,
                    "cannot be labelled by these functions",
                    related=(Label(lf.name.span, f"reads `{name}`", False),),
                    help=f"give `{dataset.name}` a column `{name}` of type {columns[name]} "
                    "(a derived column `= …` works), or remove it from `apply_to`",
                )
            )


def _names(expr: ast.Expr) -> Iterator[str]:
    """The bare names an expression reads (not called functions, not attribute heads)."""
    if isinstance(expr, ast.Name):
        yield expr.id
    elif isinstance(expr, ast.Call):
        for argument in expr.args:
            yield from _names(argument.value)
    elif isinstance(expr, ast.Binary):
        yield from _names(expr.left)
        yield from _names(expr.right)
    elif isinstance(expr, ast.Unary):
        yield from _names(expr.operand)
    elif isinstance(expr, ast.ListExpr):
        for element in expr.items:
            yield from _names(element)
    elif isinstance(expr, ast.Range):
        yield from _names(expr.low)
        yield from _names(expr.high)
