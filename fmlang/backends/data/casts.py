"""Values a cast or a label mapping turned into NULL: counted, reported, and failing the run
unless the column says otherwise (`on_cast_error = fail | null | drop`).

The typed step (fmlang/lower/pipeline.py) keeps, per column whose cast can fail, a column
`fm_bad_<name>` holding the raw text of every present value that did not convert (NULL
elsewhere). The executor counts them with the step's row count in one query over the typed
table (the data is not read again), writes the counts to the rule report, and only when a
`fail` column has some does it read up to three examples. Engine-neutral: the DuckDB and
Spark executors share it, each passing a function that runs a query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fmlang.diagnostics import Diagnostic, error
from fmlang.ir.nodes import Dataset
from fmlang.lower.pipeline import CastCheck, Step
from fmlang.lower.sql import DIALECTS

EXAMPLES = 3


def count_query(step: Step, dialect: str = "duckdb") -> str:
    """`count(*)` of the step's table, then the count of each cast check's failures."""
    d = DIALECTS[dialect]
    counts = "".join(f", count({d.quote(c.flag)})" for c in step.casts)
    return f"SELECT count(*){counts} FROM {d.quote(step.table)}"


def examples_query(step: Step, check: CastCheck, dialect: str = "duckdb") -> str:
    d = DIALECTS[dialect]
    flag = d.quote(check.flag)
    return (
        f"SELECT {flag} FROM {d.quote(step.table)} WHERE {flag} IS NOT NULL "
        f"GROUP BY {flag} ORDER BY min({d.quote('fm_row')}) LIMIT {EXAMPLES}"
    )


def cast_nulls(step: Step, row: Sequence[Any]) -> dict[str, int]:
    """Column → values turned into NULL, from `count_query`'s row (after the row count)."""
    return {c.column: int(n or 0) for c, n in zip(step.casts, row[1:], strict=True)}


def failure(
    dataset: Dataset, step: Step, nulls: dict[str, int], examples: Callable[[CastCheck], list[str]]
) -> Diagnostic | None:
    """The error for the `fail` columns (the default) that lost values, or None."""
    failed = [c for c in step.casts if c.on_error == "fail" and nulls.get(c.column)]
    if not failed:
        return None
    first = failed[0]
    notes = []
    for check in failed:
        shown = ", ".join(repr(_short(x)) for x in examples(check))
        what = _what(check)
        notes.append(
            f"`{check.column}` ({check.type}): {nulls[check.column]:,} value"
            f"{'s' * (nulls[check.column] != 1)} {what}, e.g. {shown}"
        )
    columns = ", ".join(f"`{c.column}`" for c in failed)
    total = sum(nulls[c.column] for c in failed)
    return error(
        "FM0740",
        f"{total:,} value{'s' * (total != 1)} of dataset `{dataset.name}` did not convert to "
        f"the schema ({columns}) and would have become NULL",
        first.span.to_span() if first.span else None,
        "declared here",
        help="fix the column's type (or the label's classes) to match the data, or say what "
        "such values do: `{ on_cast_error = null }` keeps the row with a NULL, "
        "`{ on_cast_error = drop }` drops the row",
        notes=tuple(notes),
    )


def _what(check: CastCheck) -> str:
    if check.type == "label":
        return "not among the classes"
    return f"not convertible to `{check.type}`"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(nulls: dict[str, int]) -> str:
    """`; did not convert: 3 in priority` for the run output; '' when every value did."""
    parts = [f"{n:,} in {column}" for column, n in nulls.items() if n]
    return f"; did not convert: {', '.join(parts)}" if parts else ""
