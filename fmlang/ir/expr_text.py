"""An IR expression as the spec would write it, on one line: `length(CONTENT) < 3`.

For titles and reports (`drop where length(CONTENT) < 3`, not `drop where …`). The
precedence is the grammar's (`fmt/expr.py`), loosest first; a child looser than its place
is parenthesized, so the text reads back as the same tree.
"""

from __future__ import annotations

from fmlang.ir.expr import (
    Attr,
    BinOp,
    Call,
    ColumnRef,
    Expr,
    ListLit,
    Lit,
    NameRef,
    QuantityLit,
    RangeLit,
    RegexLit,
    UnaryOp,
)

RANGE, OR, AND, NOT, COMPARE, SUM, PRODUCT, UNARY, ATOM = range(1, 10)
_BINARY = {"or": OR, "and": AND, "+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def expr_text(expr: Expr) -> str:
    return _text(expr)[0]


def _text(expr: Expr) -> tuple[str, int]:
    """The text and its precedence."""
    if isinstance(expr, BinOp):
        return _binary(expr)
    if isinstance(expr, UnaryOp):
        if expr.op == "not":
            return f"not {_at(expr.operand, NOT)}", NOT
        return f"-{_at(expr.operand, UNARY)}", UNARY
    if isinstance(expr, RangeLit):
        return f"{_at(expr.low, OR)}..{_at(expr.high, OR)}", RANGE
    return _atom(expr), ATOM


def _binary(expr: BinOp) -> tuple[str, int]:
    level = _BINARY.get(expr.op, COMPARE)
    # left-associative: the right operand of `a - (b - c)` keeps its parentheses
    right_level = level + 1 if level in (SUM, PRODUCT) else level
    if level == COMPARE:  # comparisons do not chain: both sides bind tighter
        return f"{_at(expr.left, SUM)} {expr.op} {_at(expr.right, SUM)}", COMPARE
    return f"{_at(expr.left, level)} {expr.op} {_at(expr.right, right_level)}", level


def _at(expr: Expr, level: int) -> str:
    text, own = _text(expr)
    return text if own >= level else f"({text})"


def _atom(expr: Expr) -> str:
    if isinstance(expr, ColumnRef | NameRef):
        return expr.name
    if isinstance(expr, Lit):
        return _literal(expr.value)
    if isinstance(expr, QuantityLit):
        return expr.quantity.text
    if isinstance(expr, RegexLit):
        return f"/{expr.pattern}/{expr.flags}"
    if isinstance(expr, ListLit):
        return "[" + ", ".join(expr_text(item) for item in expr.items) + "]"
    if isinstance(expr, Attr):
        return f"{_at(expr.value, ATOM)}.{expr.name}"
    if isinstance(expr, Call):
        args = [expr_text(a) for a in expr.args]
        args += [f"{k.name} = {expr_text(k.value)}" for k in expr.keywords]
        return f"{expr.func}({', '.join(args)})"
    raise AssertionError(f"an expression kind without text: {type(expr).__name__}")


def _literal(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c, c) for c in value) + '"'
    return repr(value)
