"""Types of the small expression language used by filters, splits and labeling functions."""

from __future__ import annotations

from collections.abc import Mapping

from fmlang.check.context import Ctx, describe
from fmlang.diagnostics import Span
from fmlang.regex import RegexError, parse, re2_problem
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast

TEXT, NUMBER, BOOL, REGEX, LIST, CATEGORY, DATE, ANY = (
    "text", "number", "bool", "regex", "list", "category", "date", "any",
)  # fmt: skip

COLUMN_TYPE = {
    "string": TEXT, "text": TEXT, "int": NUMBER, "float": NUMBER, "bool": BOOL,
    "category": CATEGORY, "label": CATEGORY, "date": DATE, "timestamp": DATE,
}  # fmt: skip

# name → (argument types, result, what it computes)
FUNCTIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "length": ((TEXT,), NUMBER, "number of characters"),
    "words": ((TEXT,), NUMBER, "number of whitespace-separated words"),
    "lower": ((TEXT,), TEXT, "lower-cased text"),
    "upper": ((TEXT,), TEXT, "upper-cased text"),
    "trim": ((TEXT,), TEXT, "text without surrounding whitespace"),
    "contains_any": ((TEXT, LIST), BOOL, "whether the text contains any of the strings"),
    "starts_with": ((TEXT, TEXT), BOOL, "whether the text starts with the string"),
    "ends_with": ((TEXT, TEXT), BOOL, "whether the text ends with the string"),
    "count": ((TEXT, REGEX), NUMBER, "number of regex matches"),
    "hash": ((ANY,), NUMBER, "a stable 64-bit hash, for splits"),
}
TEXTUAL = {TEXT, CATEGORY, DATE}


def check_regex(ctx: Ctx, node: ast.Regex) -> int | None:
    """Check the pattern against the one dialect (RE2, docs/reference.md): fmc's reading of
    it (`fmlang.regex`), then RE2's own parser when `google-re2` is installed. The shortest
    match it allows, or None when it is refused."""
    bad_flags = set(node.flags) - set("imsx")
    if bad_flags:
        ctx.error(
            "FM0323",
            f"unknown regex flag `{''.join(sorted(bad_flags))}`",
            node.span,
            "unknown flag",
            "regex flags are i (ignore case), m, s and x",
        )
    try:
        parsed = parse(node.pattern)
    except RegexError as exc:
        ctx.error(
            "FM0385",
            f"regex is not RE2 syntax: {exc.message}",
            _within(node, exc.start, exc.end),
            "here",
            exc.hint,
        )
        return None
    problem = re2_problem(node.pattern)
    if problem is not None:
        ctx.error(
            "FM0385",
            f"RE2 refuses the regex: {problem}",
            node.span,
            "not RE2 syntax",
            "check brackets, escapes and repetition counts (at most 1000); a `/` inside the "
            "regex is written `\\/`",
        )
        return None
    return parsed.shortest


def _within(node: ast.Regex, start: int, end: int) -> Span:
    """The span of `pattern[start:end]` inside the regex token (one line: `/` + pattern)."""
    span = node.span
    if span.line != span.end_line or span.start == span.end:
        return span
    end = min(end, len(node.pattern))
    return Span(span.file, span.line, span.column + 1 + start, span.line,
                span.column + 1 + end, span.start + 1 + start, span.start + 1 + end)  # fmt: skip


class ExprChecker:
    """Infers a type for each expression and reports what does not fit."""

    def __init__(self, ctx: Ctx, columns: Mapping[str, str], where: str) -> None:
        self.ctx = ctx
        self.columns = columns  # column name → COLUMN_TYPE value
        self.where = where

    def expect(self, expr: ast.Expr, wanted: str, what: str) -> None:
        found = self.infer(expr)
        if not _fits(found, wanted):
            self.ctx.error(
                "FM0322",
                f"{what} must be {_a(wanted)}, but this is {_a(found)}",
                expr.span,
                f"{found}, expected {wanted}",
            )

    def infer(self, expr: ast.Expr) -> str:
        method = getattr(self, "_" + type(expr).__name__.lower(), None)
        if method is None:
            self.ctx.error(
                "FM0322",
                f"{describe(expr)} cannot be used in {self.where}",
                expr.span,
                "not allowed here",
            )
            return ANY
        result: str = method(expr)
        return result

    def _name(self, expr: ast.Name) -> str:
        if expr.id in self.columns:
            return self.columns[expr.id]
        symbol = self.ctx.lookup(expr.id)
        if symbol is not None and isinstance(symbol.node, ast.Let):
            return self.infer(symbol.node.value)
        hint = did_you_mean(expr.id, self.columns) or (
            f"columns here: {', '.join(sorted(self.columns))}" if self.columns else None
        )
        self.ctx.error(
            "FM0403",
            f"unknown column `{expr.id}` in {self.where}",
            expr.span,
            "not a column or constant",
            hint,
        )
        return ANY

    def _number(self, expr: ast.Number) -> str:
        return NUMBER

    def _quantity(self, expr: ast.Quantity) -> str:
        if expr.unit != "%":
            self.ctx.error(
                "FM0303",
                f"`{expr.text}` has a unit, which {self.where} cannot use",
                expr.span,
                "unexpected unit",
                "only percentages are allowed here",
            )
        return NUMBER

    def _string(self, expr: ast.String) -> str:
        return TEXT

    def _bool(self, expr: ast.Bool) -> str:
        return BOOL

    def _regex(self, expr: ast.Regex) -> str:
        check_regex(self.ctx, expr)
        return REGEX

    def _listexpr(self, expr: ast.ListExpr) -> str:
        for item in expr.items:
            self.infer(item)
        return LIST

    def _unary(self, expr: ast.Unary) -> str:
        if expr.op == "not":
            self.expect(expr.operand, BOOL, "the operand of `not`")
            return BOOL
        self.expect(expr.operand, NUMBER, "the operand of `-`")
        return NUMBER

    def _binary(self, expr: ast.Binary) -> str:
        op = expr.op
        if op in ("and", "or"):
            self.expect(expr.left, BOOL, f"each side of `{op}`")
            self.expect(expr.right, BOOL, f"each side of `{op}`")
            return BOOL
        if op in ("~", "!~"):
            self.expect(expr.left, TEXT, f"the left side of `{op}`")
            self.expect(expr.right, REGEX, f"the right side of `{op}`")
            return BOOL
        if op == "contains":
            self.expect(expr.left, TEXT, "the left side of `contains`")
            self.expect(expr.right, TEXT, "the right side of `contains`")
            return BOOL
        if op == "in":
            self.infer(expr.left)
            self.expect(expr.right, LIST, "the right side of `in`")
            return BOOL
        if op in ("+", "-", "*", "/"):
            self.expect(expr.left, NUMBER, f"each side of `{op}`")
            self.expect(expr.right, NUMBER, f"each side of `{op}`")
            return NUMBER
        if op == "allows":
            self.ctx.error(
                "FM0322",
                f"`allows` only appears in license constraints, not in {self.where}",
                expr.span,
                "not allowed here",
            )
            return BOOL
        return self._comparison(expr)

    def _comparison(self, expr: ast.Binary) -> str:
        left, right = self.infer(expr.left), self.infer(expr.right)
        if expr.op in ("==", "!=") and (
            left == right or ANY in (left, right) or {left, right} <= TEXTUAL
        ):
            return BOOL
        if (
            left == right == NUMBER
            or ANY in (left, right)
            or ({left, right} <= TEXTUAL and expr.op not in ("==", "!="))
        ):
            return BOOL
        self.ctx.error(
            "FM0322",
            f"cannot compare {_a(left)} with {_a(right)} using `{expr.op}`",
            expr.span,
            f"{left} {expr.op} {right}",
            "use `length(col)` or `words(col)` to compare text by size"
            if TEXT in (left, right)
            else None,
        )
        return BOOL

    def _call(self, expr: ast.Call) -> str:
        if not isinstance(expr.func, ast.Name):
            self.ctx.error(
                "FM0324",
                "only named functions can be called",
                expr.func.span,
                "not a function name",
            )
            return ANY
        name = expr.func.id
        if name not in FUNCTIONS:
            self.ctx.error(
                "FM0324",
                f"unknown function `{name}`",
                expr.func.span,
                "not a built-in function",
                did_you_mean(name, FUNCTIONS) or f"functions: {', '.join(sorted(FUNCTIONS))}",
            )
            return ANY
        params, result, _ = FUNCTIONS[name]
        if len(expr.args) != len(params) or any(a.name for a in expr.args):
            self.ctx.error(
                "FM0324",
                f"`{name}` takes {len(params)} argument"
                f"{'s' * (len(params) != 1)} ({', '.join(params)}), "
                f"{len(expr.args)} given",
                expr.span,
                "wrong arguments",
            )
            return result
        for index, (arg, param) in enumerate(zip(expr.args, params, strict=True)):
            self.expect(arg.value, param, f"argument {index + 1} of `{name}`")
        if name == "count":
            self._count_pattern(expr.args[1].value)
        return result

    def _count_pattern(self, pattern: ast.Expr) -> None:
        """`count` counts matches; where a match may be empty the engines count positions
        differently (bytes in DuckDB, UTF-16 units in Spark), so such patterns are refused."""
        if isinstance(pattern, ast.Name):
            symbol = self.ctx.lookup(pattern.id)
            if symbol is not None and isinstance(symbol.node, ast.Let):
                pattern = symbol.node.value
        if not isinstance(pattern, ast.Regex):
            return
        try:
            shortest = parse(pattern.pattern).shortest
        except RegexError:
            return  # reported where the regex itself is checked
        if shortest == 0:
            self.ctx.error(
                "FM0386",
                "`count` needs a regex that cannot match the empty string",
                pattern.span,
                "can match nothing",
                "make every match take a character: `a+` rather than `a*`, no pattern made "
                "only of anchors or `\\b`",
            )

    def _attribute(self, expr: ast.Attribute) -> str:
        self.ctx.error(
            "FM0322",
            f"`.{expr.attr.name}` cannot be used in {self.where}",
            expr.span,
            "no attributes here",
            "refer to columns by their bare name",
        )
        return ANY


def _fits(found: str, wanted: str) -> bool:
    return found == wanted or ANY in (found, wanted) or (wanted == TEXT and found in TEXTUAL)


def _a(kind: str) -> str:
    return {
        "any": "a value",
        "list": "a list",
        "regex": "a regex",
        "bool": "a condition",
        "text": "text",
        "number": "a number",
        "category": "a category",
        "date": "a date",
    }.get(kind, kind)
