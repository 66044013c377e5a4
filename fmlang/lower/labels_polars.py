"""A `labels` block → polars expressions: the label matrix without SQL, where that is exact.

The same matrix as `fmlang.lower.labels`' query (DuckDB is the reference): each function an
Int32 column `lf_<name>`, its class index or -1 where it abstains (its condition false or
NULL; Python functions -1, filled in by the executor). Only what has an exact polars
equivalent is lowered; anything else raises `NoPolars` naming it, and the caller runs the
whole block's SQL in DuckDB instead. Never an approximation:

- regexes through `fmlang.regex.to_rust` (RE2's meaning in Rust's `regex` syntax; patterns
  with no known exact form, `\\p{…}` or a non-ASCII letter under `i`, are refused);
- `lower()` and `words()` are what the caller passes in (`Kernels`): DuckDB's
  `lower()` is not polars' `to_lowercase()` (İ, final sigma, a newer Unicode table), and
  `words()` must count as the `fm_words` UDF does (`fmlang.backends.data.label_polars`);
- `length()` counts code points (`len_chars`), as DuckDB's `length` does;
- `and`/`or`/`not` are Kleene logic in both engines; comparisons only between values of one
  kind (numbers, text, booleans), since the engines coerce mixed kinds differently;
  arithmetic, `upper`, `trim`, `hash` and the like are refused.

`lower(COL)`, `words(COL)` and `length(COL)` that several functions use are computed once
(`shared`), as the SQL hoists them. Speed, measured on benchmarks/lf_throughput.py's million
rows: `contains_any` is one regex alternation of its literals (faster there than a search per
word or Aho-Corasick), and a case-sensitive regex with a non-ASCII required literal runs only
on the rows holding one (`prefiltered`); Rust's engine does as well by itself elsewhere.
Polars itself is imported here only when a block is
lowered, so `fmc check` never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from fmlang.ir.expr import (
    BinOp,
    Call,
    ColumnRef,
    Expr,
    ListLit,
    Lit,
    NameRef,
    RangeLit,
    RegexLit,
    UnaryOp,
    walk,
)
from fmlang.ir.nodes import LabelingFunction, Labels
from fmlang.lower.labels import ABSTAIN, lf_column
from fmlang.lower.prefilter import required_literals
from fmlang.lower.sql import hoist_key, regex_pattern
from fmlang.regex import to_rust

Kind = str  # "text", "number" or "bool": a value's kind, or a column's ("other": neither)
_COMPARE = ("<", "<=", ">", ">=", "==", "!=")


class NoPolars(Exception):
    """What the block uses that has no exact polars form."""


@dataclass(frozen=True)
class Kernels:
    """Expression → expression functions for what polars has no exact built-in for:
    DuckDB's `lower()` (String) and the `fm_words` count (Int64)."""

    lower: Callable[[Any], Any]
    words: Callable[[Any], Any]


@dataclass(frozen=True)
class PolarsLabels:
    """`shared` columns first (`with_columns`), then `columns`: (`lf_<name>`, expression)."""

    shared: tuple[tuple[str, Any], ...]
    columns: tuple[tuple[str, Any], ...]

    def evaluate(self, frame: Any) -> Any:
        """The `lf_*` columns of `frame` (a polars DataFrame), in the block's order."""
        lazy = frame.lazy()
        if self.shared:
            lazy = lazy.with_columns([expr.alias(name) for name, expr in self.shared])
        # `with_columns` gives a constant (a Python function's -1) the frame's height
        lazy = lazy.with_columns([expr.alias(name) for name, expr in self.columns])
        return lazy.select([name for name, _ in self.columns]).collect()


def lower_labels_polars(
    labels: Labels, kinds: Mapping[str, Kind], kernels: Kernels
) -> PolarsLabels:
    """The block's label matrix as polars expressions over a frame whose columns have
    `kinds`; `NoPolars` when any function has no exact polars form."""
    import polars as pl

    shared = _shared(labels)
    compiler = _Compiler(pl, kinds, kernels, shared)
    columns = tuple(
        (lf_column(lf.name), _vote(compiler, lf, labels.classes)) for lf in labels.functions
    )
    hoisted = tuple((alias, compiler.call(key)) for key, alias in shared.items())
    return PolarsLabels(hoisted, columns)


def _shared(labels: Labels) -> dict[tuple[str, str], str]:
    """`lower(COL)`, `words(COL)` and `length(COL)` calls used twice or more."""
    uses: dict[tuple[str, str], int] = {}
    for lf in labels.functions:
        for node in walk(lf.expr) if lf.expr is not None else ():
            key = hoist_key(node) if isinstance(node, Call) else None
            if key is not None:
                uses[key] = uses.get(key, 0) + 1
    shared = sorted(key for key, count in uses.items() if count > 1 and key[0] in _CALL_KINDS)
    return {key: f"__fm_{key[0]}_{key[1]}" for key in shared}


def _vote(compiler: _Compiler, lf: LabelingFunction, classes: tuple[str, ...]) -> Any:
    pl = compiler.pl
    if lf.python is not None or lf.expr is None:
        return pl.lit(ABSTAIN, pl.Int32)
    value, kind = compiler.expr(lf.expr)
    if lf.target is not None:
        if kind != "bool":
            raise NoPolars(f"lf {lf.name}: its condition is not a boolean")
        index = classes.index(lf.target)
        return pl.when(value.fill_null(False)).then(index).otherwise(ABSTAIN).cast(pl.Int32)
    if kind != "text":
        raise NoPolars(f"lf {lf.name}: its value is not a class name")
    if not classes:
        return pl.lit(ABSTAIN, pl.Int32)
    chain: Any = pl
    for i, name in enumerate(classes):
        chain = chain.when(value == pl.lit(name, pl.String)).then(i)
    return chain.otherwise(ABSTAIN).cast(pl.Int32)


class _Compiler:
    """One expression → (polars expression, kind)."""

    def __init__(
        self,
        pl: Any,
        kinds: Mapping[str, Kind],
        kernels: Kernels,
        shared: Mapping[tuple[str, str], str],
    ) -> None:
        self.pl = pl
        self.kinds = kinds
        self.kernels = kernels
        self.shared = shared

    def expr(self, expr: Expr) -> tuple[Any, Kind]:
        pl = self.pl
        if isinstance(expr, ColumnRef):
            kind = self.kinds.get(expr.name, "other")
            if kind not in ("text", "number", "bool"):
                raise NoPolars(f"column `{expr.name}` is not text, a number or a boolean")
            return pl.col(expr.name), kind
        if isinstance(expr, Lit):
            return _literal(pl, expr.value)
        if isinstance(expr, NameRef):  # a class name used as a value
            return pl.lit(expr.name, pl.String), "text"
        if isinstance(expr, Call):
            key = hoist_key(expr)
            if key is not None and key in self.shared:
                return pl.col(self.shared[key]), _CALL_KINDS[key[0]]
            return self.call_expr(expr)
        if isinstance(expr, BinOp):
            return self.binop(expr)
        if isinstance(expr, UnaryOp) and expr.op == "not":
            value = self.typed(expr.operand, "bool", "`not`")
            return value.not_(), "bool"
        raise NoPolars(f"`{type(expr).__name__}` has no polars form here")

    def typed(self, expr: Expr, kind: Kind, where: str) -> Any:
        value, found = self.expr(expr)
        if found != kind:
            raise NoPolars(f"{where} takes {kind}, given {found}")
        return value

    def call(self, key: tuple[str, str]) -> Any:
        """A shared call's own expression (not the column it is stored in)."""
        value, _ = self.call_expr(Call(func=key[0], args=(ColumnRef(name=key[1]),)))
        return value

    def call_expr(self, call: Call) -> tuple[Any, Kind]:
        pl, func, args = self.pl, call.func, call.args
        if call.keywords:
            raise NoPolars(f"`{func}` with keyword arguments")
        if func in ("lower", "words", "length") and len(args) == 1:
            text = self.typed(args[0], "text", f"`{func}`")
            if func == "lower":
                return self.kernels.lower(text), "text"
            if func == "words":
                return self.kernels.words(text), "number"
            return text.str.len_chars().cast(pl.Int64), "number"
        if func in ("starts_with", "ends_with") and len(args) == 2:
            text = self.typed(args[0], "text", f"`{func}`")
            affix = self.typed(args[1], "text", f"`{func}`")
            method = text.str.starts_with if func == "starts_with" else text.str.ends_with
            return method(affix), "bool"
        if func == "count" and len(args) == 2 and isinstance(args[1], RegexLit):
            text = self.typed(args[0], "text", "`count`")
            rust, literals = self.regex(args[1]), self.literals(args[0], args[1])
            if literals:
                kernel = partial(prefiltered, pattern=rust, literals=literals, count=True)
                return text.map_batches(kernel, pl.Int64, is_elementwise=True), "number"
            return text.str.count_matches(rust).cast(pl.Int64), "number"
        if func == "contains_any" and len(args) == 2:
            text = self.typed(args[0], "text", "`contains_any`")
            items = args[1].items if isinstance(args[1], ListLit) else (args[1],)
            if not items:
                return pl.lit(False), "bool"
            words = [self.literal_text(w) for w in items]
            if len(words) == 1:
                return text.str.contains(words[0], literal=True), "bool"
            # one pass of Rust's regex engine over an alternation of the literals: 1.5-3x
            # faster than a search per word or `str.contains_any` on the benchmark
            either = "|".join(_re2_literal(w) for w in words)
            return text.str.contains(self.regex(RegexLit(pattern=either))), "bool"
        raise NoPolars(f"function `{func}` has no polars form")

    def literal_text(self, expr: Expr) -> str:
        if isinstance(expr, Lit) and isinstance(expr.value, str):
            return expr.value
        raise NoPolars("a substring to search for that is not a text literal")

    def regex(self, regex: RegexLit) -> str:
        rust = to_rust(regex_pattern(regex))
        if rust is None:
            raise NoPolars(f"regex /{regex.pattern}/ has no exact Rust form")
        return rust

    def literals(self, text: Expr, regex: RegexLit) -> tuple[str, ...]:
        """The required literals (`fmlang.lower.prefilter`) of a case-sensitive regex over a
        column, when one of them is not ASCII: `prefiltered` then runs the regex on the rows
        holding one. Measured on the benchmark's million rows: Rust's engine searches for
        ASCII literals itself (`\\b(19|20)\\d\\d\\b`: 0.038 s plain, 0.062 s prefiltered) but
        not for `[$€£]` (0.15 s plain, 0.03 s prefiltered)."""
        found = required_literals(regex_pattern(regex)) if isinstance(text, ColumnRef) else None
        if not found or found[1] or all(lit.isascii() for lit in found[0]):
            return ()
        return found[0]

    def binop(self, op: BinOp) -> tuple[Any, Kind]:
        pl = self.pl
        if op.op in ("~", "!~") and isinstance(op.right, RegexLit):
            text = self.typed(op.left, "text", f"`{op.op}`")
            rust, literals = self.regex(op.right), self.literals(op.left, op.right)
            if literals:
                kernel = partial(prefiltered, pattern=rust, literals=literals, count=False)
                match = text.map_batches(kernel, pl.Boolean, is_elementwise=True)
            else:
                match = text.str.contains(rust)
            return (match if op.op == "~" else match.not_()), "bool"
        if op.op == "contains":
            text = self.typed(op.left, "text", "`contains`")
            return text.str.contains(self.literal_text(op.right), literal=True), "bool"
        if op.op in ("and", "or"):
            left = self.typed(op.left, "bool", f"`{op.op}`")
            right = self.typed(op.right, "bool", f"`{op.op}`")
            return (left & right if op.op == "and" else left | right), "bool"
        if op.op in _COMPARE:
            (left, kind), (right, other) = self.expr(op.left), self.expr(op.right)
            if kind != other or (kind == "bool" and op.op not in ("==", "!=")):
                raise NoPolars(f"`{op.op}` between {kind} and {other}")
            return _compare(op.op, left, right), "bool"
        if op.op == "in":
            left, kind = self.expr(op.left)
            if kind not in ("text", "number"):
                raise NoPolars(f"`in` on {kind}")
            if isinstance(op.right, RangeLit):
                low = self.typed(op.right.low, kind, "`in` ranges")
                high = self.typed(op.right.high, kind, "`in` ranges")
                return (left >= low) & (left <= high), "bool"
            if isinstance(op.right, ListLit):
                items = [self.typed(item, kind, "`in` lists") for item in op.right.items]
                if not items:
                    return pl.lit(False), "bool"
                # SQL's x IN (a, b): x = a OR x = b, NULL when x is NULL
                return pl.any_horizontal([left == item for item in items]), "bool"
        raise NoPolars(f"operator `{op.op}` has no polars form")


_CALL_KINDS = {"lower": "text", "words": "number", "length": "number"}  # of HOISTABLE


def prefiltered(series: Any, pattern: str, literals: tuple[str, ...], count: bool) -> Any:
    """`pattern`'s matches (`count`: their number) in a String series, the regex run only on
    the rows that contain one of `literals` (every match contains one): elsewhere False or 0,
    NULL where the text is NULL. Several times faster where Rust's regex engine finds no
    literal to search for itself (`[$€£]\\s?\\d+`: 0.15 s a million rows, 0.03 s here)."""
    import polars as pl

    if len(literals) == 1:
        holds = series.str.contains(literals[0], literal=True)
    else:
        holds = series.str.contains_any(list(literals))  # one Aho-Corasick pass
    rows = holds.arg_true()
    subset = series.gather(rows)
    if count:
        found = subset.str.count_matches(pattern).cast(pl.Int64)
        values = pl.repeat(0, len(series), dtype=pl.Int64, eager=True)
    else:
        found = subset.str.contains(pattern)
        values = pl.repeat(False, len(series), dtype=pl.Boolean, eager=True)
    missing = series.is_null()
    if missing.any():
        values = values.scatter(missing.arg_true(), None)
    return values.scatter(rows, found).alias(series.name)


def _re2_literal(text: str) -> str:
    """An RE2 pattern matching exactly `text`: ASCII punctuation escaped."""
    return "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in text)


def _literal(pl: Any, value: bool | int | float | str) -> tuple[Any, Kind]:
    if isinstance(value, bool):
        return pl.lit(value, pl.Boolean), "bool"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise NoPolars(f"the number {value} is beyond 64 bits")
        return pl.lit(value, pl.Int64), "number"
    if isinstance(value, float):
        return pl.lit(value, pl.Float64), "number"
    return pl.lit(value, pl.String), "text"


def _compare(op: str, left: Any, right: Any) -> Any:
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "==":
        return left == right
    return left != right
