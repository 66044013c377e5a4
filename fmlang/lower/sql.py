"""Expressions of the spec language → SQL text, for DuckDB and Spark SQL.

One small compiler (`SqlCompiler`) walks the typed IR expression tree; what differs between
the engines (quoting, string escapes, regex and list functions) is a `Dialect` table. A spec's
regexes are RE2 with RE2's meaning (`fmlang.regex`), the spec's flags written inline as
`(?i)`: DuckDB runs them as they are; Spark runs java.util.regex, so its dialect rewrites
every pattern into the Java pattern that matches the same strings (`to_java`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fmlang.diagnostics import error
from fmlang.errors import StageError
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
from fmlang.regex import to_java

HASH_BUCKETS = 10_000  # splits assign hash(key) % HASH_BUCKETS to parts by cumulative share


@dataclass(frozen=True)
class Dialect:
    """How one engine spells what differs."""

    name: str
    quote_char: str
    backslash_escapes: bool  # Spark processes `\` escapes in string literals; DuckDB does not
    regex_match: str  # `{x}` and `{p}` (a quoted pattern)
    regex_count: str
    regex_replace: str  # `{x}`, `{p}`, `{r}`: replace every match
    starts_with: str
    ends_with: str
    length: str
    words: str  # `{x}`: the number of whitespace-separated words
    hash64: str  # `{x}` cast to text → a non-negative 60-bit integer from its md5
    pattern: Callable[[str], str] = str  # an RE2 pattern → the engine's equivalent
    json_field: str = "json_extract_string({x}, {p})"  # `{p}`: a quoted JSONPath `$.a.b`

    def quote(self, name: str) -> str:
        q = self.quote_char
        return q + name.replace(q, q + q) + q

    def string(self, value: str) -> str:
        if self.backslash_escapes:
            value = value.replace("\\", "\\\\")
            return "'" + value.replace("'", "\\'") + "'"
        return "'" + value.replace("'", "''") + "'"


DUCKDB = Dialect(
    name="duckdb",
    quote_char='"',
    backslash_escapes=False,
    regex_match="regexp_matches({x}, {p})",
    regex_count="len(regexp_extract_all({x}, {p}))",
    regex_replace="regexp_replace({x}, {p}, {r}, 'g')",
    starts_with="starts_with({x}, {y})",
    ends_with="ends_with({x}, {y})",
    length="length({x})",
    # A vectorised Arrow UDF (pyarrow's utf8_split_whitespace), registered by the executor:
    # 3-4x faster than counting regex matches, and it splits on Unicode whitespace like
    # Python's str.split().
    words="fm_words({x})",
    hash64="CAST(('0x' || substr(md5(CAST({x} AS VARCHAR)), 1, 15)) AS BIGINT)",
)

SPARK = Dialect(
    name="spark",
    quote_char="`",
    backslash_escapes=True,
    regex_match="({x} RLIKE {p})",
    regex_count="CAST(size(regexp_extract_all({x}, {p}, 0)) AS BIGINT)",  # BIGINT, as DuckDB
    regex_replace="regexp_replace({x}, {p}, {r})",
    starts_with="startswith({x}, {y})",
    ends_with="endswith({x}, {y})",
    length="CAST(char_length({x}) AS BIGINT)",
    words="fm_words({x})",  # the Arrow UDF DuckDB runs (backends/data/udfs.py), as a Spark one
    hash64="CAST(conv(substr(md5(CAST({x} AS STRING)), 1, 15), 16, 10) AS BIGINT)",
    pattern=to_java,
    json_field="get_json_object({x}, {p})",
)

DIALECTS = {"duckdb": DUCKDB, "spark": SPARK}

_BINARY = {
    "+": "+", "-": "-", "*": "*", "/": "/", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
    "==": "=", "!=": "<>", "and": "AND", "or": "OR",
}  # fmt: skip


def regex_pattern(regex: RegexLit) -> str:
    """The pattern with its flags written inline, as both engines accept them."""
    flags = "".join(sorted(set(regex.flags) & set("ims")))
    pattern = _strip_verbose(regex.pattern) if "x" in regex.flags else regex.pattern
    return f"(?{flags}){pattern}" if flags else pattern


def _strip_verbose(pattern: str) -> str:
    """`x` (verbose) flag: drop unescaped whitespace and `#` comments outside classes, which
    RE2 cannot do itself."""
    out: list[str] = []
    in_class, escaped, comment = False, False, False
    for ch in pattern:
        if comment:
            comment = ch != "\n"
        elif escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif in_class or not (ch.isspace() or ch == "#"):
            in_class = (in_class or ch == "[") and not (in_class and ch == "]")
            out.append(ch)
        else:
            comment = ch == "#"
    return "".join(out)


class SqlCompiler:
    """Compiles one expression in the scope of a table whose columns are plain names.

    `classes` maps a class name used as a value (a labeling function returning the class)
    to its text; `columns` renames columns when a step reads them under another name."""

    def __init__(
        self,
        dialect: Dialect,
        columns: Mapping[str, str] | None = None,
        hoisted: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.d = dialect
        self.columns = dict(columns or {})
        self.hoisted = dict(hoisted or {})  # (function, column) → a precomputed column
        self._calls: dict[str, Callable[[Call], str]] = {
            "length": lambda c: self.d.length.format(x=self.sql(c.args[0])),
            "words": self._words,
            "lower": lambda c: f"lower({self.sql(c.args[0])})",
            "upper": lambda c: f"upper({self.sql(c.args[0])})",
            "trim": lambda c: f"trim({self.sql(c.args[0])})",
            "contains_any": self._contains_any,
            "starts_with": lambda c: self.d.starts_with.format(
                x=self.sql(c.args[0]), y=self.sql(c.args[1])
            ),
            "ends_with": lambda c: self.d.ends_with.format(
                x=self.sql(c.args[0]), y=self.sql(c.args[1])
            ),
            "count": self._count,
            "hash": lambda c: self.hash64(self.sql(c.args[0])),
            "source_file": lambda c: self.d.quote("fm_source_file"),
            "row_number": lambda c: self.d.quote("fm_row"),
        }

    def sql(self, expr: Expr) -> str:
        if isinstance(expr, ColumnRef):
            return self.d.quote(self.columns.get(expr.name, expr.name))
        if isinstance(expr, Lit):
            return self._literal(expr.value)
        if isinstance(expr, QuantityLit):
            return repr(float(expr.quantity.value))
        if isinstance(expr, NameRef):
            return self.d.string(expr.name)  # a class name used as a value
        if isinstance(expr, RegexLit):
            return self.d.string(self.d.pattern(regex_pattern(expr)))
        if isinstance(expr, ListLit):
            return "(" + ", ".join(self.sql(item) for item in expr.items) + ")"
        if isinstance(expr, Call):
            return self._call(expr)
        if isinstance(expr, BinOp):
            return self._binop(expr)
        if isinstance(expr, UnaryOp):
            operand = self.sql(expr.operand)
            return f"(NOT {operand})" if expr.op == "not" else f"(-{operand})"
        raise LoweringError(expr, f"`{_describe(expr)}` has no SQL form")

    def hash64(self, text_sql: str) -> str:
        return self.d.hash64.format(x=text_sql)

    def regex_replace(self, x: str, pattern: str, replacement: str) -> str:
        return self.d.regex_replace.format(
            x=x, p=self.d.string(self.d.pattern(pattern)), r=self.d.string(replacement)
        )

    def regex_match(self, x: str, pattern: str) -> str:
        return self.d.regex_match.format(x=x, p=self.d.string(self.d.pattern(pattern)))

    def _literal(self, value: bool | int | float | str) -> str:
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, str):
            return self.d.string(value)
        return repr(value)

    def _call(self, call: Call) -> str:
        key = hoist_key(call)
        if key is not None and key in self.hoisted:
            return self.d.quote(self.hoisted[key])
        handler = self._calls.get(call.func)
        if handler is None:
            raise LoweringError(call, f"function `{call.func}` has no SQL form")
        return handler(call)

    def _binop(self, op: BinOp) -> str:
        left, right = self.sql(op.left), op.right
        if op.op in ("~", "!~"):
            match = self.d.regex_match.format(x=left, p=self.sql(right))
            return match if op.op == "~" else f"(NOT {match})"
        if op.op == "contains":
            return f"(instr({left}, {self.sql(right)}) > 0)"
        if op.op == "in":
            if isinstance(right, RangeLit):
                return f"({left} BETWEEN {self.sql(right.low)} AND {self.sql(right.high)})"
            return f"({left} IN {self.sql(right)})"
        if op.op in _BINARY:
            return f"({left} {_BINARY[op.op]} {self.sql(right)})"
        raise LoweringError(op, f"operator `{op.op}` has no SQL form")

    def _words(self, call: Call) -> str:
        return self.d.words.format(x=self.sql(call.args[0]))

    def _count(self, call: Call) -> str:
        return self.d.regex_count.format(x=self.sql(call.args[0]), p=self.sql(call.args[1]))

    def _contains_any(self, call: Call) -> str:
        text, words = self.sql(call.args[0]), call.args[1]
        items = words.items if isinstance(words, ListLit) else (words,)
        if not items:
            return "FALSE"
        return "(" + " OR ".join(f"instr({text}, {self.sql(w)}) > 0" for w in items) + ")"


class LoweringError(StageError):
    """An expression the checker accepted but SQL cannot express (FM0709, at the node), so
    `fmc build` and `fmc run` report it like any stage failure."""

    def __init__(self, node: object, message: str) -> None:
        span = getattr(node, "span", None)
        super().__init__(
            error(
                "FM0709",
                message,
                span.to_span() if span else None,
                "no SQL form",
                help="rewrite it with the functions the reference lists, or use a Python "
                "labeling function",
            )
        )


def _describe(expr: Expr) -> str:
    if isinstance(expr, Attr):
        return f"….{expr.name}"
    return type(expr).__name__


HOISTABLE = ("lower", "upper", "trim", "words", "length")


def hoist_key(call: Call) -> tuple[str, str] | None:
    """`lower(COL)` and friends: computed once per row when several expressions use them."""
    if call.func in HOISTABLE and len(call.args) == 1 and isinstance(call.args[0], ColumnRef):
        return (call.func, call.args[0].name)
    return None


def boolean(sql: str) -> str:
    """A condition where NULL counts as false (SQL's three-valued logic made two-valued)."""
    return f"coalesce({sql}, FALSE)"
