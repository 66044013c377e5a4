"""Check `key value` settings against the table in `schema.py`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from fmlang.check import schema as s
from fmlang.check.context import Ctx, describe, dotted
from fmlang.check.limits import range_text
from fmlang.check.units import DIMENSION_NAMES, UNIT_DIMENSION, normalise
from fmlang.diagnostics import Label, error
from fmlang.diagnostics.render import clip
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast

# Column checks need the dataset in scope; callers pass one when they have it.
ColumnCheck = Callable[[ast.Ident | ast.Name], None]


def check_body(
    ctx: Ctx,
    body: Sequence[ast.Setting | ast.BlockSetting | ast.Grant | object],
    table: dict[str, s.Kind],
    where: str,
    columns: ColumnCheck | None = None,
) -> None:
    seen: dict[str, ast.Ident] = {}
    for stmt in body:
        if not isinstance(stmt, ast.Setting | ast.BlockSetting):
            continue
        key = stmt.key
        if key.name in seen:
            ctx.report(
                error(
                    "FM0305",
                    f"`{key.name}` is set twice in {where}",
                    key.span,
                    "set again here",
                    help="remove one of them",
                    related=(Label(seen[key.name].span, "first set here", False),),
                )
            )
            continue
        seen[key.name] = key
        kind = table.get(key.name)
        if kind is None:
            hint = (
                did_you_mean(key.name, table)
                or _nested_home(key.name, table)
                or f"{where} accepts: {', '.join(sorted(table))}"
            )
            ctx.error(
                "FM0301",
                f"unknown setting `{key.name}` in {where}",
                key.span,
                "not a setting here",
                hint,
            )
            continue
        if isinstance(stmt, ast.BlockSetting):
            if not isinstance(kind, s.Block):
                ctx.error(
                    "FM0302",
                    f"`{key.name}` takes a value, not a block",
                    stmt.span,
                    "block given",
                    f"write `{key.name} = …`",
                )
                continue
            check_body(ctx, stmt.body, kind.settings, f"`{key.name}`", columns)
        elif isinstance(kind, s.Block):
            ctx.error(
                "FM0302",
                f"`{key.name}` is a block",
                stmt.value.span,
                "value given",
                f"write `{key.name} {{ … }}` with settings inside",
            )
        else:
            check_value(ctx, kind, stmt.value, key.name, columns)


def _nested_home(key: str, table: dict[str, s.Kind]) -> str | None:
    """`warmup` at the top of a model belongs in its `train { … }` block."""
    for block, kind in table.items():
        if isinstance(kind, s.Block) and key in kind.settings:
            return f"`{key}` belongs inside `{block} {{ … }}`"
    return None


def check_value(
    ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, columns: ColumnCheck | None = None
) -> None:
    if isinstance(value, ast.Auto):
        _check_auto(ctx, kind, value, key, columns)
        return
    checker = _CHECKERS.get(type(kind))
    if checker is not None:
        checker(ctx, kind, value, key, columns)


def _mismatch(ctx: Ctx, value: ast.Expr, key: str, wanted: str, help: str | None = None) -> None:
    found = describe(value)
    if isinstance(value, ast.Number | ast.Quantity):
        found += f" `{value.text}`"
    ctx.error(
        "FM0302",
        f"`{key}` needs {wanted}, found {found}",
        value.span,
        f"expected {wanted}",
        help,
    )


def _check_auto(
    ctx: Ctx, kind: s.Kind, value: ast.Auto, key: str, columns: ColumnCheck | None
) -> None:
    if isinstance(kind, s.Call) and kind.candidates:
        _check_candidates(ctx, kind, value, key, columns)
        return
    if not kind.auto:
        ctx.error(
            "FM0306",
            f"`{key}` cannot be `auto`",
            value.span,
            "the solver does not choose this",
            "give it a value",
        )
        return
    domain = value.domain
    if domain is None:
        return
    items: Sequence[ast.Expr]
    if isinstance(domain, ast.ListExpr):
        items = domain.items
        if not items:
            ctx.error(
                "FM0302",
                f"`auto in []` leaves `{key}` nothing to choose",
                domain.span,
                "empty choice",
            )
    elif isinstance(domain, ast.Range):
        items = (domain.low, domain.high)
    else:
        _mismatch(ctx, domain, key, "a list `[a, b]` or a range `lo..hi` after `auto in`")
        return
    for item in items:
        check_value(ctx, kind, item, key, columns)


def _check_candidates(
    ctx: Ctx, kind: s.Call, value: ast.Auto, key: str, columns: ColumnCheck | None
) -> None:
    """`adapter auto in [lora(...), ...]`: each candidate is checked as a value of its own
    (a missing list or `select by` is the selection checker's, FM0373)."""
    if value.domain is None:
        return
    if not isinstance(value.domain, ast.ListExpr):
        _mismatch(ctx, value.domain, key, "a list of candidates `[a(...), b(...)]` after `auto in`")
        return
    for item in value.domain.items:
        check_value(ctx, kind, item, key, columns)


def _number(value: ast.Expr) -> float | None:
    if isinstance(value, ast.Number):
        return value.value
    if isinstance(value, ast.Unary) and value.op == "-" and isinstance(value.operand, ast.Number):
        return -value.operand.value
    return None


Bounded = s.Int | s.Real | s.Between | s.Reals


def _bounds(ctx: Ctx, value: ast.Expr, key: str, number: float, kind: Bounded) -> None:
    """Whether `number` lies in the kind's range (FM0304, with the reason for the range)."""
    if not math.isfinite(number):
        ctx.error("FM0304", f"`{key}` = {_written(value)} is not a finite number", value.span,
                  "overflows", kind.why or "write a number a float can hold")  # fmt: skip
        return
    lo, hi = kind.min, kind.highest
    open_lo = getattr(kind, "open_min", False)
    open_hi = getattr(kind, "open_max", False) and getattr(kind, "limit", None) is None
    below = lo is not None and (number <= lo if open_lo else number < lo)
    above = hi is not None and (number >= hi if open_hi else number > hi)
    if below or above:
        rng = range_text(lo, hi, open_lo, open_hi)
        fix = kind.why or f"use a value {rng.removeprefix('it must be ')}"
        message = f"`{key}` = {_written(value)} is out of range: {rng}"
        ctx.error("FM0304", message, value.span, "out of range", fix)


def _written(value: ast.Expr) -> str:
    """The number as the spec wrote it (`1e999`, not `inf`)."""
    if isinstance(value, ast.Number | ast.Quantity):
        return clip(value.text, 40)
    if isinstance(value, ast.Unary) and isinstance(value.operand, ast.Number):
        return "-" + clip(value.operand.text, 40)
    return "the value"


def _int(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Int | s.Between)
    number = _number(value)
    if number is not None and not math.isfinite(number):
        _bounds(ctx, value, key, number, kind)
        return
    if (
        number is None
        or not float(number).is_integer()
        or (isinstance(value, ast.Number) and not value.is_integer)
    ):
        _mismatch(ctx, value, key, "a whole number")
        return
    _bounds(ctx, value, key, number, kind)


def _real(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Real)
    if isinstance(value, ast.Quantity) and value.unit == "%":
        number: float | None = value.value / 100
    else:
        number = _number(value)
    if number is None:
        _mismatch(ctx, value, key, "a number")
        return
    _bounds(ctx, value, key, number, kind)


def _qty(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Qty)
    if not check_quantity(ctx, value, kind.dimension, f"`{key}`"):
        return
    if not isinstance(value, ast.Quantity):
        return  # a plain fraction, which `check_quantity` bounded
    if not math.isfinite(value.value):
        ctx.error("FM0304", f"`{key}` = {_written(value)} is not a finite quantity",
                  value.span, "overflows", "write a number a float can hold")  # fmt: skip
    elif kind.positive and value.value <= 0:
        ctx.error("FM0304", f"`{key}` = {_written(value)} is out of range: it must be above 0",
                  value.span, "out of range", "the cost model divides by it: give the "
                  "device's real figure")  # fmt: skip


def check_quantity(ctx: Ctx, value: ast.Expr, dimension: str, what: str) -> bool:
    wanted = DIMENSION_NAMES[dimension]
    if isinstance(value, ast.Number) and dimension == "ratio":
        if 0 <= value.value <= 1:
            return True
        ctx.error(
            "FM0304",
            f"{what} is a fraction between 0 and 1, not {value.text}",
            value.span,
            "out of range",
            f"write `{value.value / 100:g}` or `{value.text}%`",
        )
        return False
    if not isinstance(value, ast.Quantity):
        ctx.error(
            "FM0303",
            f"{what} needs {wanted}, found {describe(value)}",
            value.span,
            "no unit",
            f"add a unit, e.g. {wanted.split('(')[-1].rstrip(')')}",
        )
        return False
    if normalise(value.value, value.unit) is None:
        units = [u for u, d in UNIT_DIMENSION.items() if d == dimension]
        ctx.error(
            "FM0303",
            f"unknown unit `{value.unit}`",
            value.span,
            "unknown unit",
            did_you_mean(value.unit, units) or f"{what} takes {', '.join(units)}",
        )
        return False
    found = UNIT_DIMENSION[value.unit]
    if found != dimension:
        ctx.error(
            "FM0303",
            f"{what} needs {wanted}, but `{value.text}` is {DIMENSION_NAMES[found].split(' (')[0]}",
            value.span,
            "wrong unit",
        )
        return False
    return True


def _text(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    if not isinstance(value, ast.String):
        _mismatch(ctx, value, key, "a string in double quotes", f'write `{key} "…"`')


def _flag(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    if not isinstance(value, ast.Bool):
        _mismatch(ctx, value, key, "`true` or `false`")


def _one_of(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.OneOf)
    name = value.id if isinstance(value, ast.Name) else None
    if name is None:
        _mismatch(ctx, value, key, f"one of {', '.join(kind.values)}")
    elif name not in kind.values:
        ctx.error(
            "FM0307",
            f"`{name}` is not a valid `{key}`",
            value.span,
            "unknown choice",
            did_you_mean(name, kind.values) or f"choose one of {', '.join(kind.values)}",
        )


def _names(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Names)
    items = value.items if isinstance(value, ast.ListExpr) else (value,)
    for item in items:
        if not isinstance(item, ast.Name):
            _mismatch(ctx, item, key, "a list of names `[a, b]`")
        elif kind.values and item.id not in kind.values:
            ctx.error(
                "FM0307",
                f"`{item.id}` is not a valid `{key}` entry",
                item.span,
                "unknown name",
                did_you_mean(item.id, kind.values) or f"choose from {', '.join(kind.values)}",
            )


def _reals(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    if not isinstance(value, ast.ListExpr):
        _mismatch(ctx, value, key, "a list of numbers `[0.5, 0.5]`")
        return
    assert isinstance(kind, s.Reals)
    for item in value.items:
        number = _number(item)
        if number is None:
            _mismatch(ctx, item, key, "a number")
        else:
            _bounds(ctx, item, key, number, kind)


def _ref(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Ref)
    items = value.items if kind.many and isinstance(value, ast.ListExpr) else (value,)
    for item in items:
        if isinstance(item, ast.Name):
            ctx.resolve(item, kind.target)
        else:
            _mismatch(ctx, item, key, f"the name of a `{'` or `'.join(kind.target)}`")


def _data_ref(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, _: ColumnCheck | None) -> None:
    assert isinstance(kind, s.DataRef)
    items = value.items if kind.many and isinstance(value, ast.ListExpr) else (value,)
    for item in items:
        check_data_ref(ctx, item, key, labels_ok=kind.labels_ok)


def check_data_ref(ctx: Ctx, value: ast.Expr, key: str, labels_ok: bool = True) -> None:
    from fmlang.check.datasets import split_names

    parts = dotted(value)
    if parts is None or len(parts) > 2:
        _mismatch(ctx, value, key, "a dataset, `dataset.split` or a `labels` block")
        return
    kinds = ("dataset", "labels") if labels_ok and len(parts) == 1 else ("dataset",)
    symbol = ctx.resolve(parts[0], kinds)
    if symbol is None or len(parts) == 1:
        return
    assert isinstance(symbol.node, ast.Dataset)
    splits = split_names(symbol.node)
    if parts[1].name not in splits:
        ctx.error(
            "FM0404",
            f"dataset `{symbol.name}` has no split `{parts[1].name}`",
            parts[1].span,
            "unknown split",
            did_you_mean(parts[1].name, splits)
            or (
                f"its splits are {', '.join(splits)}"
                if splits
                else "declare splits with `split { train 80%, test 20% }`"
            ),
        )


def _column(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, cols: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Column)
    items = value.items if kind.many and isinstance(value, ast.ListExpr) else (value,)
    for item in items:
        if not isinstance(item, ast.Name):
            _mismatch(ctx, item, key, "a column name")
        elif cols is not None:
            cols(item)


def _between(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, cols: ColumnCheck | None) -> None:
    if isinstance(value, ast.Range):
        _int(ctx, kind, value.low, key, cols)
        _int(ctx, kind, value.high, key, cols)
        low, high = _number(value.low), _number(value.high)
        if low is not None and high is not None and low > high:
            ctx.error(
                "FM0304",
                f"`{key}` range is empty: {low:g} > {high:g}",
                value.span,
                "empty range",
                f"write `{high:g}..{low:g}`",
            )
    else:
        _int(ctx, kind, value, key, cols)


def _call(ctx: Ctx, kind: s.Kind, value: ast.Expr, key: str, cols: ColumnCheck | None) -> None:
    assert isinstance(kind, s.Call)
    head, args = (
        (value, ())
        if isinstance(value, ast.Name)
        else ((value.func, value.args) if isinstance(value, ast.Call) else (None, ()))
    )
    if not isinstance(head, ast.Name):
        _mismatch(ctx, value, key, f"one of {', '.join(kind.heads)}")
        return
    if head.id not in kind.heads:
        ctx.error(
            "FM0307",
            f"unknown `{key}` kind `{head.id}`",
            head.span,
            "unknown kind",
            did_you_mean(head.id, kind.heads) or f"choose one of {', '.join(kind.heads)}",
        )
        return
    _call_args(ctx, kind, head.id, args, value, key, cols)


def _call_args(
    ctx: Ctx,
    kind: s.Call,
    head: str,
    args: Sequence[ast.Argument],
    value: ast.Expr,
    key: str,
    cols: ColumnCheck | None,
) -> None:
    keywords = kind.heads[head]
    positional = kind.positional.get(head, ())
    given = [a for a in args if a.name is None]
    if len(given) > len(positional):
        ctx.error(
            "FM0308",
            f"`{head}` takes {len(positional)} positional argument"
            f"{'s' * (len(positional) != 1)}, {len(given)} given",
            given[-1].span,
            "extra argument",
            f"name it: `{head}(name = …)`" if keywords else None,
        )
    elif len(given) < len(positional):
        ctx.error(
            "FM0308",
            f"`{head}` needs {len(positional)} positional argument{'s' * (len(positional) != 1)}",
            value.span,
            "missing argument",
            f"write `{head}(…)`",
        )
    for arg, expected in zip(given, positional, strict=False):
        check_value(ctx, expected, arg.value, head, cols)
    seen: set[str] = set()
    for arg in args:
        if arg.name is None:
            continue
        if arg.name.name in seen:
            ctx.error("FM0305", f"`{arg.name.name}` is given twice", arg.name.span, "repeated")
        seen.add(arg.name.name)
        arg_kind = keywords.get(arg.name.name)
        if arg_kind is None:
            ctx.error(
                "FM0308",
                f"`{head}` has no argument `{arg.name.name}`",
                arg.name.span,
                "unknown argument",
                did_you_mean(arg.name.name, keywords)
                or (f"it takes {', '.join(keywords)}" if keywords else "it takes none"),
            )
        else:
            check_value(ctx, arg_kind, arg.value, arg.name.name, cols)


_CHECKERS: dict[type, Callable[[Ctx, s.Kind, ast.Expr, str, ColumnCheck | None], None]] = {
    s.Int: _int, s.Real: _real, s.Qty: _qty, s.Text: _text, s.Flag: _flag, s.OneOf: _one_of,
    s.Names: _names, s.Reals: _reals, s.Ref: _ref, s.DataRef: _data_ref, s.Column: _column,
    s.Between: _between, s.Call: _call,
}  # fmt: skip


def setting(body: Sequence[object], key: str) -> ast.Setting | ast.BlockSetting | None:
    for stmt in body:
        if isinstance(stmt, ast.Setting | ast.BlockSetting) and stmt.key.name == key:
            return stmt
    return None


def setting_value(body: Sequence[object], key: str) -> ast.Expr | None:
    found = setting(body, key)
    return found.value if isinstance(found, ast.Setting) else None
