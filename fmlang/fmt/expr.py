"""Expressions → canonical text with the fewest parentheses that keep the tree.

Precedence follows `grammar/fm.lark`, loosest first: `..` < `or` < `and` < `not` <
comparisons (`<` … `~` `!~` `contains` `allows` `in`, non-associative) < `+ -` < `* /` <
unary `-` < postfix `.attr` and calls < atoms.

`auto` needs care because it is an atom that can reach to its right: a bare `auto` swallows a
following `in x` as its domain; `auto in x` swallows a following `..y`, `+ y`, `.y` or `(y)`
into that domain; `auto in x..y` swallows all of those but `..`. Each rendering records which
of those tails its text ends with, and an operand whose tail would swallow the token after it
is parenthesized.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.syntax import ast

RANGE, OR, AND, NOT, COMPARE, SUM, PRODUCT, UNARY, POSTFIX, ATOM = range(1, 11)

COMPARISON_OPS = frozenset(
    {"<=", ">=", "==", "!=", "<", ">", "~", "!~", "contains", "allows", "in"}
)
BINARY_PRECEDENCE = {"or": OR, "and": AND, "+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT}

# What a text ending in a bare `auto`, `auto in <sum>` or `auto in <sum>..<sum>` swallows.
_SWALLOWED_BY = {
    "auto": frozenset({"in"}),
    "domain": frozenset({"..", "+", "-", "*", "/", ".", "("}),
    "range_domain": frozenset({"+", "-", "*", "/", ".", "("}),
}

_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True, slots=True)
class _Rendered:
    text: str
    precedence: int
    tails: frozenset[str] = frozenset()


def format_expr(expr: ast.Expr) -> str:
    """The canonical text of one expression, as written at the top of a statement."""
    return _operand(expr, RANGE).text


def bracketed_parts(expr: ast.Expr) -> tuple[str, list[str], str] | None:
    """A call or list as opening text, one text per argument or item, and closing bracket."""
    if isinstance(expr, ast.Call) and expr.args:
        func = _operand(expr.func, POSTFIX, "(").text
        return f"{func}(", [_argument(a.name, format_expr(a.value)) for a in expr.args], ")"
    if isinstance(expr, ast.ListExpr) and expr.items:
        return "[", [format_expr(item) for item in expr.items], "]"
    return None


def quote(value: str) -> str:
    """A string literal that the parser reads back as `value`."""
    return '"' + "".join(_STRING_ESCAPES.get(char, char) for char in value) + '"'


def _operand(expr: ast.Expr, min_precedence: int, followed_by: str | None = None) -> _Rendered:
    """`expr` as an operand: parenthesized when looser than its place allows or when its tail
    would swallow the token after it. Two Python frames per level of nesting, about what the
    parser spends, so that whatever parses can be printed."""
    if isinstance(expr, ast.Binary):
        rendered = _binary(expr)
    elif isinstance(expr, ast.Unary):
        rendered = _unary(expr)
    elif isinstance(expr, ast.Range):
        rendered = _range(expr)
    elif isinstance(expr, ast.Attribute):
        value = _operand(expr.value, POSTFIX, ".")
        rendered = _Rendered(f"{value.text}.{expr.attr.name}", POSTFIX)
    elif isinstance(expr, ast.Call):
        rendered = _call(expr)
    elif isinstance(expr, ast.Auto):
        rendered = _auto(expr)
    elif isinstance(expr, ast.ListExpr):
        rendered = _Rendered("[" + _joined(expr.items) + "]", ATOM)
    else:
        rendered = _Rendered(_literal(expr), ATOM)
    if rendered.precedence < min_precedence or _swallows(rendered.tails, followed_by):
        return _Rendered(f"({rendered.text})", ATOM)
    return rendered


def _joined(items: tuple[ast.Expr, ...]) -> str:
    texts: list[str] = []
    for item in items:
        texts.append(_operand(item, RANGE).text)
    return ", ".join(texts)


def _swallows(tails: frozenset[str], token: str | None) -> bool:
    return token is not None and any(token in _SWALLOWED_BY[tail] for tail in tails)


def _literal(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Number | ast.Quantity):
        return expr.text
    if isinstance(expr, ast.String):
        return quote(expr.value)
    if isinstance(expr, ast.Regex):
        return f"/{expr.pattern}/{expr.flags}"
    if isinstance(expr, ast.Bool):
        return "true" if expr.value else "false"
    raise TypeError(f"not an expression: {expr!r}")


def _binary(expr: ast.Binary) -> _Rendered:
    """Comparisons, or a left-associative chain `a + b - c …` walked without recursion."""
    if expr.op in COMPARISON_OPS:
        left = _operand(expr.left, SUM, expr.op)
        right = _operand(expr.right, SUM)
        return _Rendered(f"{left.text} {expr.op} {right.text}", COMPARE, right.tails)
    precedence = BINARY_PRECEDENCE[expr.op]
    spine: list[ast.Binary] = []
    node: ast.Expr = expr
    while isinstance(node, ast.Binary) and BINARY_PRECEDENCE.get(node.op) == precedence:
        spine.append(node)
        node = node.left
    first = _operand(node, precedence, spine[-1].op)
    text, tails = first.text, first.tails
    for link in reversed(spine):
        if _swallows(tails, link.op):
            text, tails = f"({text})", frozenset()
        right = _operand(link.right, precedence + 1)
        text, tails = f"{text} {link.op} {right.text}", right.tails
    return _Rendered(text, precedence, tails)


def _unary(expr: ast.Unary) -> _Rendered:
    if expr.op == "not":
        operand = _operand(expr.operand, NOT)
        return _Rendered(f"not {operand.text}", NOT, operand.tails)
    operand = _operand(expr.operand, UNARY)
    space = " " if operand.text.startswith("-") else ""
    return _Rendered(f"-{space}{operand.text}", UNARY, operand.tails)


def _range(expr: ast.Range) -> _Rendered:
    low = _operand(expr.low, OR, "..")
    high = _operand(expr.high, OR)
    return _Rendered(_dots(low.text, high.text), RANGE, high.tails)


def _dots(low: str, high: str) -> str:
    """`1..4`, but `1 .. .5`: dots next to a number's own `.` would read badly."""
    joiner = " .. " if high.startswith(".") or low.endswith(".") else ".."
    return f"{low}{joiner}{high}"


def _call(expr: ast.Call) -> _Rendered:
    func = _operand(expr.func, POSTFIX, "(")
    args: list[str] = []
    for arg in expr.args:
        args.append(_argument(arg.name, _operand(arg.value, RANGE).text))
    return _Rendered(f"{func.text}({', '.join(args)})", POSTFIX)


def _argument(name: ast.Ident | None, value: str) -> str:
    return value if name is None else f"{name.name} = {value}"


def _auto(expr: ast.Auto) -> _Rendered:
    if expr.domain is None:
        return _Rendered("auto", ATOM, frozenset({"auto"}))
    if isinstance(expr.domain, ast.Range):
        low = _operand(expr.domain.low, SUM, "..")
        high = _operand(expr.domain.high, SUM)
        text = "auto in " + _dots(low.text, high.text)
        return _Rendered(text, ATOM, high.tails | {"range_domain"})
    domain = _operand(expr.domain, SUM)
    return _Rendered(f"auto in {domain.text}", ATOM, domain.tails | {"domain"})
