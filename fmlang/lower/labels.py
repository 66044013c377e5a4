"""A `labels` block → one SQL query that applies every labeling function in a single pass.

Each function becomes an integer column `lf_<name>`: the index of the class it votes for, or
-1 where it abstains (its condition is false or NULL). Python functions
(`python("module:function")`) cannot run in SQL: their columns are -1 here and the executor
fills them in. The query reads the labelled split from the data stage's Parquet output, at a
path relative to the build folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.ir.expr import Call, ColumnRef, walk
from fmlang.ir.nodes import LabelingFunction, Labels
from fmlang.lower.sql import DIALECTS, SqlCompiler, boolean, hoist_key

ABSTAIN = -1


def split_path(dataset: str, split: str | None) -> str:
    """Where the data stage writes a dataset (or one split of it), relative to the build."""
    return f"run/data/{dataset}/{split or 'all'}.parquet"


def lf_column(name: str) -> str:
    return f"lf_{name}"


@dataclass(frozen=True)
class LabelQuery:
    labels: str
    dialect: str
    sql: str
    functions: tuple[str, ...]  # LF names in order: the label matrix's columns
    python: tuple[tuple[str, str], ...]  # (LF name, "module:function") filled by the executor

    def script(self) -> str:
        head = f"-- fmc label matrix for `{self.labels}` ({self.dialect}); -1 = abstain.\n"
        notes = "".join(
            f"-- {lf_column(name)}: python function {ref}, filled in by the executor\n"
            for name, ref in self.python
        )
        return head + notes + self.sql + ";\n"


def lower_labels(labels: Labels, dialect: str = "duckdb") -> LabelQuery:
    d = DIALECTS[dialect]
    hoisted = _shared_calls(labels)
    compiler = SqlCompiler(d, hoisted=hoisted)
    columns = [
        f"{_vote(compiler, lf, labels.classes)} AS {d.quote(lf_column(lf.name))}"
        for lf in labels.functions
    ]
    path = split_path(labels.dataset, labels.split)
    source = f"read_parquet({d.string(path)})" if dialect == "duckdb" else f"parquet.`{path}`"
    if hoisted:  # computed once per row in an inner query, then dropped
        plain = SqlCompiler(d)
        inner = ", ".join(
            f"{plain.sql(Call(func=func, args=(ColumnRef(name=col),)))} AS {d.quote(alias)}"
            for (func, col), alias in hoisted.items()
        )
        source = f"(SELECT *, {inner} FROM {source}) AS fm_rows"
        exclude = ", ".join(d.quote(alias) for alias in hoisted.values())
        star = f"* EXCLUDE ({exclude})" if dialect == "duckdb" else f"* EXCEPT ({exclude})"
        sql = f"SELECT {star}, {', '.join(columns)} FROM {source}"
    else:
        sql = f"SELECT *, {', '.join(columns)} FROM {source}"
    python = tuple((lf.name, lf.python) for lf in labels.functions if lf.python)
    return LabelQuery(labels.name, dialect, sql, tuple(lf.name for lf in labels.functions), python)


def _shared_calls(labels: Labels) -> dict[tuple[str, str], str]:
    """`lower(COL)`-style calls that two or more functions use: common subexpressions,
    each computed once per row instead of once per use."""
    uses: dict[tuple[str, str], int] = {}
    for lf in labels.functions:
        for node in walk(lf.expr) if lf.expr is not None else ():
            key = hoist_key(node) if isinstance(node, Call) else None
            if key is not None:
                uses[key] = uses.get(key, 0) + 1
    shared = sorted(key for key, count in uses.items() if count > 1)
    return {key: f"fm_{key[0]}_{key[1]}" for key in shared}


def _vote(compiler: SqlCompiler, lf: LabelingFunction, classes: tuple[str, ...]) -> str:
    if lf.python is not None or lf.expr is None:
        return str(ABSTAIN)
    if lf.target is not None:
        index = classes.index(lf.target)
        return f"CASE WHEN {boolean(compiler.sql(lf.expr))} THEN {index} ELSE {ABSTAIN} END"
    # The function's value is the class itself (a class name or NULL).
    whens = " ".join(f"WHEN {compiler.d.string(name)} THEN {i}" for i, name in enumerate(classes))
    return f"CASE {compiler.sql(lf.expr)} {whens} ELSE {ABSTAIN} END"
