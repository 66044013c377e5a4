"""The typed expression tree: labeling functions, row filters, derived columns, split keys.

Each node has a `kind` tag, so a JSON `Expr` validates back to the same class.
Names are resolved when the IR is built: a column of the dataset in scope is a `ColumnRef`,
a `let` constant is replaced by its value, a built-in column (`source_file`) is a `Call`
with no arguments, and any other bare name (a class, `training_data`, `pii`) is a `NameRef`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fmlang.ir.base import Node, Quantity


class ColumnRef(Node):
    kind: Literal["column"] = "column"
    name: str


class NameRef(Node):
    kind: Literal["name"] = "name"
    name: str


class Lit(Node):
    """A string, number or boolean literal."""

    kind: Literal["literal"] = "literal"
    value: bool | int | float | str


class QuantityLit(Node):
    """A number with a unit, normalised: `30ms`, `5%`."""

    kind: Literal["quantity"] = "quantity"
    quantity: Quantity


class RegexLit(Node):
    """`/check (it )?out/i` → pattern `check (it )?out`, flags `i`."""

    kind: Literal["regex"] = "regex"
    pattern: str
    flags: str = ""


class ListLit(Node):
    kind: Literal["list"] = "list"
    items: tuple[Expr, ...]


class RangeLit(Node):
    """`low..high`, inclusive."""

    kind: Literal["range"] = "range"
    low: Expr
    high: Expr


class Attr(Node):
    """`value.name`, for dotted names that are not a column: `latency.p95`."""

    kind: Literal["attr"] = "attr"
    value: Expr
    name: str


class KeywordArg(Node):
    name: str
    value: Expr


class Call(Node):
    """`func(args, key = value)`; `func` is the (dotted) name called: `length`, `hash`."""

    kind: Literal["call"] = "call"
    func: str
    args: tuple[Expr, ...] = ()
    keywords: tuple[KeywordArg, ...] = ()


class BinOp(Node):
    """`op` as written: `+ - * /`, `< <= > >= == !=`, `~ !~`, `contains`, `in`, `allows`,
    `and`, `or`."""

    kind: Literal["binop"] = "binop"
    op: str
    left: Expr
    right: Expr


class UnaryOp(Node):
    """`not x` (op `not`) or `-x` (op `-`)."""

    kind: Literal["unary"] = "unary"
    op: str
    operand: Expr


Expr = Annotated[
    ColumnRef | NameRef | Lit | QuantityLit | RegexLit | ListLit | RangeLit | Attr | Call
    | BinOp | UnaryOp,
    Field(discriminator="kind"),
]  # fmt: skip

for _model in (ListLit, RangeLit, Attr, KeywordArg, Call, BinOp, UnaryOp):
    _model.model_rebuild()


def walk(expr: Expr) -> list[Expr]:
    """`expr` and every expression under it, parents first."""
    out: list[Expr] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(children(node)))
    return out


def children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, ListLit):
        return expr.items
    if isinstance(expr, RangeLit):
        return (expr.low, expr.high)
    if isinstance(expr, Attr):
        return (expr.value,)
    if isinstance(expr, Call):
        return (*expr.args, *(k.value for k in expr.keywords))
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, UnaryOp):
        return (expr.operand,)
    return ()


def columns_used(expr: Expr) -> tuple[str, ...]:
    """Column names `expr` reads, in first-use order, without repeats."""
    seen: dict[str, None] = {}
    for node in walk(expr):
        if isinstance(node, ColumnRef):
            seen.setdefault(node.name, None)
    return tuple(seen)
