"""AST values → typed Python values, driven by the setting table in `check/schema.py`.

The checker has already reported every ill-typed value, so conversion here is lenient:
a value it cannot convert becomes `MISSING` and the setting is left out, never a crash.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fmlang.check import schema as s
from fmlang.check.context import dotted
from fmlang.check.program import Program, Symbol
from fmlang.check.units import normalise
from fmlang.ir.base import DataRef, Grant, Knob, Option, Quantity, Scalar, SourceSpan
from fmlang.syntax import ast

MISSING: Any = object()

# The base unit of each dimension, as the IR names it (`ratio` is a plain fraction).
BASE_UNITS = {
    "time": "s", "bytes": "B", "bandwidth": "B/s", "compute": "FLOPS", "money": "USD",
    "money_rate": "USD/h", "token_rate": "tok/s", "request_rate": "req/s", "ratio": "",
}  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """What names mean where a value is written: the file's symbols and the columns."""

    program: Program
    file: str  # the program's key for the file
    shown: str = ""  # the file's name in the IR (relative to the entry's folder)
    columns: frozenset[str] = field(default_factory=frozenset)

    @property
    def ir_file(self) -> str:
        return self.shown or self.file

    def lookup(self, name: str) -> Symbol | None:
        return self.program.lookup(self.file, name)

    def with_columns(self, columns: Sequence[str]) -> Scope:
        return Scope(self.program, self.file, self.shown, frozenset(columns))

    def deref(self, expr: ast.Expr, depth: int = 0) -> ast.Expr:
        """`expr`, or the literal of the `let` constant it names."""
        if isinstance(expr, ast.Name) and expr.id not in self.columns and depth < 16:
            symbol = self.lookup(expr.id)
            if symbol is not None and isinstance(symbol.node, ast.Let):
                return self.deref(symbol.node.value, depth + 1)
        return expr


@dataclass(frozen=True)
class CallValue:
    """`head(positional, name = value)` or a bare `head`, arguments converted."""

    head: str
    positional: tuple[Any, ...] = ()
    keywords: dict[str, Any] = field(default_factory=dict)

    def options(self) -> tuple[Option, ...]:
        return tuple(
            Option(name=k, value=v) for k, v in self.keywords.items() if _is_option_value(v)
        )


def span_of(node: object) -> SourceSpan | None:
    return SourceSpan.of(getattr(node, "span", None))


# ---- scalars ------------------------------------------------------------------------


def finite(value: float) -> float:
    """`value`, with overflow (`1e400`) clamped to the largest float, so JSON round-trips."""
    return value if math.isfinite(value) else math.copysign(sys.float_info.max, value)


def number(expr: ast.Expr) -> int | float | None:
    """A plain number (`8`, `3e-4`, `-1`) as int when written as one, else float."""
    if isinstance(expr, ast.Number):
        value = finite(expr.value)
        return int(value) if expr.is_integer and value.is_integer() else value
    if isinstance(expr, ast.Unary) and expr.op == "-":
        inner = number(expr.operand)
        return None if inner is None else -inner
    return None


def fraction(expr: ast.Expr) -> float | None:
    """`5%` → 0.05, `0.05` → 0.05."""
    if isinstance(expr, ast.Quantity) and expr.unit == "%":
        return finite(expr.value) / 100
    found = number(expr)
    return None if found is None else float(found)


def quantity(expr: ast.Expr, plain_dimension: str = "number") -> Quantity | None:
    """A normalised quantity; a plain number gets `plain_dimension` and no unit."""
    span = span_of(expr)
    if isinstance(expr, ast.Quantity):
        measured = normalise(expr.value, expr.unit)
        if measured is None:
            return Quantity(value=finite(expr.value), unit=expr.unit, dimension="unknown",
                            text=expr.text, span=span)  # fmt: skip
        unit = BASE_UNITS.get(measured.dimension, measured.base_unit)
        return Quantity(value=finite(measured.value), unit=unit, dimension=measured.dimension,
                        text=expr.text, span=span)  # fmt: skip
    found = number(expr)
    if found is None:
        return None
    text = expr.text if isinstance(expr, ast.Number) else str(found)
    return Quantity(value=float(found), unit="", dimension=plain_dimension, text=text, span=span)


def name_of(expr: ast.Expr) -> str | None:
    """A bare name, a dotted name (`a.b`) or a string's text."""
    parts = dotted(expr)
    if parts is not None:
        return ".".join(p.name for p in parts)
    if isinstance(expr, ast.String):
        return expr.value
    return None


def scalar(expr: ast.Expr) -> Scalar | None:
    if isinstance(expr, ast.Bool):
        return expr.value
    if isinstance(expr, ast.Quantity) and expr.unit == "%":
        return finite(expr.value) / 100
    found = number(expr)
    return found if found is not None else name_of(expr)


def _is_option_value(value: object) -> bool:
    if isinstance(value, bool | int | float | str | Quantity):
        return True
    return isinstance(value, tuple) and all(isinstance(v, bool | int | float | str) for v in value)


# ---- schema kinds -------------------------------------------------------------------


def items(expr: ast.Expr) -> tuple[ast.Expr, ...]:
    return expr.items if isinstance(expr, ast.ListExpr) else (expr,)


def data_ref(expr: ast.Expr, scope: Scope) -> DataRef | None:
    """`ds`, `ds.split` or a `labels` name, which resolves to the data it labels."""
    parts = dotted(scope.deref(expr))
    if parts is None or not 1 <= len(parts) <= 2:
        return None
    split = parts[1].name if len(parts) == 2 else None
    symbol = scope.lookup(parts[0].name)
    if symbol is not None and isinstance(symbol.node, ast.Labels) and split is None:
        source = symbol.node.source
        return DataRef(
            dataset=source[0].name, split=source[1].name if len(source) > 1 else None,
            labels=symbol.name, span=span_of(expr),
        )  # fmt: skip
    return DataRef(dataset=parts[0].name, split=split, span=span_of(expr))


def knob(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Knob | None:
    span = span_of(expr)
    expr = scope.deref(expr)
    if isinstance(expr, ast.Auto):
        return _auto_knob(kind, expr, scope, span)
    if isinstance(expr, ast.Range):
        return Knob(low=number(expr.low), high=number(expr.high), span=span)
    value = scalar(expr)
    return None if value is None else Knob(fixed=value, span=span)


def _auto_knob(kind: s.Kind, expr: ast.Auto, scope: Scope, span: SourceSpan | None) -> Knob:
    domain = None if expr.domain is None else scope.deref(expr.domain)
    if isinstance(domain, ast.ListExpr):
        values = (scalar(scope.deref(i)) for i in domain.items)
        choices = tuple(v for v in values if v is not None)
        return Knob(auto=True, choices=choices, span=span)
    if isinstance(domain, ast.Range):
        return Knob(auto=True, low=number(domain.low), high=number(domain.high), span=span)
    if isinstance(kind, s.OneOf):
        return Knob(auto=True, choices=kind.values, span=span)
    low = getattr(kind, "min", None)
    high = getattr(kind, "max", None)
    return Knob(auto=True, low=low, high=high, span=span)


def convert(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    """The typed value of `expr` for a setting of schema kind `kind`, or MISSING."""
    if kind.auto:
        return knob(kind, expr, scope) or MISSING
    expr = scope.deref(expr)
    converter = _CONVERTERS.get(type(kind))
    result = converter(kind, expr, scope) if converter is not None else None
    return MISSING if result is None else result


def _int(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    found = number(expr)
    return int(found) if found is not None and float(found).is_integer() else None


def _real(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return fraction(expr)


def _qty(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    dimension = kind.dimension if isinstance(kind, s.Qty) else "number"
    return quantity(expr, dimension)


def _text(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return expr.value if isinstance(expr, ast.String) else None


def _flag(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return expr.value if isinstance(expr, ast.Bool) else None


def _one_of(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    choices = kind.values if isinstance(kind, s.OneOf) else ()
    return expr.id if isinstance(expr, ast.Name) and expr.id in choices else None


def _names(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return tuple(n for n in (name_of(scope.deref(i)) for i in items(expr)) if n is not None)


def _reals(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return tuple(f for f in (fraction(scope.deref(i)) for i in items(expr)) if f is not None)


def _many(kind: s.Kind, expr: ast.Expr, one: Callable[[ast.Expr], Any]) -> Any:
    if getattr(kind, "many", False):
        return tuple(v for v in (one(i) for i in items(expr)) if v is not None)
    return one(expr)


def _ref(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return _many(kind, expr, lambda e: e.id if isinstance(e, ast.Name) else None)


def _data_ref(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    return _many(kind, expr, lambda e: data_ref(e, scope))


def _call(kind: s.Kind, expr: ast.Expr, scope: Scope) -> Any:
    assert isinstance(kind, s.Call)
    head, args = (expr, ()) if isinstance(expr, ast.Name) else (
        (expr.func, expr.args) if isinstance(expr, ast.Call) else (None, ()))  # fmt: skip
    if not isinstance(head, ast.Name) or head.id not in kind.heads:
        return None
    positional_kinds = kind.positional.get(head.id, ())
    keyword_kinds = kind.heads[head.id]
    positional = tuple(
        convert(k, a.value, scope)
        for a, k in zip([a for a in args if a.name is None], positional_kinds, strict=False)
    )
    keywords = {
        a.name.name: convert(keyword_kinds[a.name.name], a.value, scope)
        for a in args
        if a.name is not None and a.name.name in keyword_kinds
    }
    return CallValue(
        head.id,
        tuple(p for p in positional if p is not MISSING),
        {k: v for k, v in keywords.items() if v is not MISSING},
    )


_CONVERTERS: dict[type, Callable[[s.Kind, ast.Expr, Scope], Any]] = {
    s.Int: _int, s.Real: _real, s.Qty: _qty, s.Text: _text, s.Flag: _flag, s.OneOf: _one_of,
    s.Names: _names, s.Reals: _reals, s.Ref: _ref, s.DataRef: _data_ref, s.Column: _ref,
    s.Between: _int, s.Call: _call,
}  # fmt: skip


# ---- bodies -------------------------------------------------------------------------


def settings(body: Sequence[object], table: dict[str, s.Kind], scope: Scope) -> dict[str, Any]:
    """Every known setting of `body`, converted; blocks become nested dicts."""
    out: dict[str, Any] = {}
    for stmt in body:
        if not isinstance(stmt, ast.Setting | ast.BlockSetting) or stmt.key.name in out:
            continue
        kind = table.get(stmt.key.name)
        if isinstance(stmt, ast.BlockSetting) and isinstance(kind, s.Block):
            value: Any = settings(stmt.body, kind.settings, scope)
            value["span"] = span_of(stmt)
        elif isinstance(stmt, ast.Setting) and kind is not None and not isinstance(kind, s.Block):
            value = convert(kind, stmt.value, scope)
        else:
            continue
        if value is not MISSING:
            out[stmt.key.name] = value
    return out


def grants(body: Sequence[object]) -> tuple[Grant, ...]:
    """One `Grant` per permission, in the order written."""
    out: list[Grant] = []
    for stmt in body:
        if isinstance(stmt, ast.Grant):
            principals = tuple(p.name for p in stmt.principals)
            out.extend(
                Grant(permission=p.name, principals=principals, span=span_of(stmt))
                for p in stmt.permissions
            )
    return tuple(out)
