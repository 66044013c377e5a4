"""AST expressions → the IR's typed expression tree, with names resolved in a `Scope`."""

from __future__ import annotations

from fmlang.check.context import dotted
from fmlang.check.schema import DERIVED_COLUMNS
from fmlang.ir import expr as ir
from fmlang.ir.values import Scope, number, quantity, span_of
from fmlang.syntax import ast

MAX_DEPTH = 200  # the parser caps nesting well below this; a guard, not a limit users meet


def build_expr(node: ast.Expr, scope: Scope, depth: int = 0) -> ir.Expr:
    """The typed expression of `node`: columns, constants and built-ins resolved."""
    if depth > MAX_DEPTH:
        return ir.NameRef(name="…", span=span_of(node))
    span = span_of(node)
    resolved = scope.deref(node)
    if resolved is not node:
        return build_expr(resolved, scope, depth + 1).model_copy(update={"span": span})
    builder = _BUILDERS.get(type(node))
    if builder is None:
        return ir.NameRef(name=type(node).__name__.lower(), span=span)
    return builder(node, scope, depth + 1)


def _name(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Name)
    span = span_of(node)
    if node.id in scope.columns:
        return ir.ColumnRef(name=node.id, span=span)
    if node.id in DERIVED_COLUMNS:
        return ir.Call(func=node.id, span=span)
    return ir.NameRef(name=node.id, span=span)


def _attribute(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Attribute)
    value = build_expr(node.value, scope, depth)
    return ir.Attr(value=value, name=node.attr.name, span=span_of(node))


def _call(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Call)
    parts = dotted(node.func)
    func = ".".join(p.name for p in parts) if parts is not None else "<expr>"
    args = tuple(build_expr(a.value, scope, depth) for a in node.args if a.name is None)
    keywords = tuple(
        ir.KeywordArg(name=a.name.name, value=build_expr(a.value, scope, depth), span=span_of(a))
        for a in node.args
        if a.name is not None
    )
    return ir.Call(func=func, args=args, keywords=keywords, span=span_of(node))


def _number(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    value = number(node)
    return ir.Lit(value=0 if value is None else value, span=span_of(node))


def _quantity(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    found = quantity(node)
    if found is None:  # unreachable for a Quantity node; keeps the types honest
        return ir.NameRef(name="quantity", span=span_of(node))
    return ir.QuantityLit(quantity=found, span=span_of(node))


def _string(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.String)
    return ir.Lit(value=node.value, span=span_of(node))


def _bool(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Bool)
    return ir.Lit(value=node.value, span=span_of(node))


def _regex(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Regex)
    return ir.RegexLit(pattern=node.pattern, flags=node.flags, span=span_of(node))


def _list(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.ListExpr)
    items = tuple(build_expr(i, scope, depth) for i in node.items)
    return ir.ListLit(items=items, span=span_of(node))


def _range(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Range)
    low, high = build_expr(node.low, scope, depth), build_expr(node.high, scope, depth)
    return ir.RangeLit(low=low, high=high, span=span_of(node))


def _binary(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Binary)
    left, right = build_expr(node.left, scope, depth), build_expr(node.right, scope, depth)
    return ir.BinOp(op=node.op, left=left, right=right, span=span_of(node))


def _unary(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    assert isinstance(node, ast.Unary)
    if node.op == "-" and isinstance(node.operand, ast.Number):
        return _number(node, scope, depth)
    operand = build_expr(node.operand, scope, depth)
    return ir.UnaryOp(op=node.op, operand=operand, span=span_of(node))


def _auto(node: ast.Expr, scope: Scope, depth: int) -> ir.Expr:
    """`auto` has no meaning inside an expression; the checker rejects it there."""
    return ir.NameRef(name="auto", span=span_of(node))


_BUILDERS = {
    ast.Name: _name, ast.Attribute: _attribute, ast.Call: _call, ast.Number: _number,
    ast.Quantity: _quantity, ast.String: _string, ast.Bool: _bool, ast.Regex: _regex,
    ast.ListExpr: _list, ast.Range: _range, ast.Binary: _binary, ast.Unary: _unary,
    ast.Auto: _auto,
}  # fmt: skip
