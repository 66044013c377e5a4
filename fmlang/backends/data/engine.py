"""Running lowered SQL in an embedded DuckDB: connection setup, UDFs, errors as diagnostics.

What SQL cannot say (Unicode NFKC normalization) is a vectorised Arrow UDF registered on the
connection under the name the lowered SQL uses (`fm_nfkc`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang.backends.data import casts
from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.errors import StageError
from fmlang.ir.nodes import Dataset
from fmlang.lower.pipeline import CastCheck, Pipeline, Step
from fmlang.suggest import did_you_mean

if TYPE_CHECKING:
    import duckdb


def connect(search_path: Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose relative paths resolve under `search_path`."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET file_search_path = '{_sql_string(str(search_path))}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    _register_udfs(con)
    return con


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    from fmlang.backends.data.udfs import nfkc, words  # shared with Spark

    con.create_function("fm_nfkc", nfkc, ["VARCHAR"], "VARCHAR", type="arrow")  # type: ignore[call-overload]
    con.create_function("fm_words", words, ["VARCHAR"], "BIGINT", type="arrow")  # type: ignore[call-overload]


@dataclass(frozen=True)
class StepResult:
    title: str
    rows_in: int
    rows_out: int
    line: int | None
    cast_nulls: dict[str, int] = field(default_factory=dict)  # column → values made NULL

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.title,
            "line": self.line,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "removed": self.rows_in - self.rows_out,
        }
        if self.cast_nulls:
            out["cast_nulls"] = dict(self.cast_nulls)
        return out


def run_pipeline(
    con: duckdb.DuckDBPyConnection,
    pipeline: Pipeline,
    dataset: Dataset,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Run every step, counting the rows each one leaves."""
    results: list[StepResult] = []
    rows = 0
    for index, step in enumerate(pipeline.steps):
        _execute(con, step, dataset, index, pipeline.steps[index - 1].table if index else None)
        count = con.execute(casts.count_query(step)).fetchone()
        after = int(count[0]) if count else 0
        nulls = casts.cast_nulls(step, count) if count and step.casts else {}
        result = StepResult(step.title, rows if index else after, after, _line(step), nulls)
        problem = casts.failure(dataset, step, nulls, partial(_examples, con, step))
        if problem is not None:
            raise StageError(problem)
        results.append(result)
        if on_step:
            on_step(result)
        rows = after
    return results


def _examples(con: duckdb.DuckDBPyConnection, step: Step, check: CastCheck) -> list[str]:
    return [str(row[0]) for row in con.execute(casts.examples_query(step, check)).fetchall()]


def _line(step: Step) -> int | None:
    return step.span.line if step.span else None


def _execute(
    con: duckdb.DuckDBPyConnection, step: Step, dataset: Dataset, index: int, previous: str | None
) -> None:
    import duckdb

    try:
        for statement in step.sql:
            con.execute(statement)
    except duckdb.Error as exc:
        columns = _columns_of(con, previous) if previous else []
        raise StageError(_diagnose(exc, step, dataset, index, columns)) from exc


def _columns_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(f'DESCRIBE "{table}"').fetchall()
    return [str(r[0]) for r in rows if not str(r[0]).startswith("fm_") and r[0] != "filename"]


_MISSING_COLUMN = re.compile(
    r'Referenced column "?([^"\s]+)"? (?:was )?not found|does not have a column named "([^"]+)"',
    re.I,
)


def no_source_files(dataset: Dataset, span: Span | None) -> Diagnostic:
    """FM0701: the engine found no file where the dataset's source points."""
    source = dataset.source
    return error(
        "FM0701",
        f"the source of dataset `{dataset.name}` matches no files",
        span,
        f"nothing matches {source.path!r}" if source else "",
        help="paths are relative to the spec's folder; check the path or the glob",
    )


def _diagnose(
    exc: Exception, step: Step, dataset: Dataset, index: int, source_columns: list[str]
) -> Diagnostic:
    message = str(exc).strip().splitlines()[0]
    source = dataset.source
    where = step.span or (source.span if source else None) or dataset.span
    span = where.to_span() if where else None
    if index == 0 and ("No files found" in message or "No such file" in message):
        return no_source_files(dataset, span)
    missing = _MISSING_COLUMN.search(message)
    if missing and index == 1:
        name = missing.group(1) or missing.group(2)
        return _missing_column(dataset, name, source_columns)
    return error(
        "FM0705",
        f"step `{step.title}` of dataset `{dataset.name}` failed in DuckDB: {message}",
        span,
        "this step",
        help="check the rule's columns and types against the data (the SQL is in the build "
        f"folder: data/{dataset.name}.duckdb.sql)",
    )


def _missing_column(dataset: Dataset, name: str, present: list[str]) -> Diagnostic:
    """`present`: the columns the source data has (DESCRIBE of the source step)."""
    column = next((c for c in dataset.columns if c.name == name), None)
    span = column.span if column and column.span else dataset.span
    listed = ", ".join(f"`{c}`" for c in present)
    hint = did_you_mean(name, present) or (f"the data has {listed}" if present else None)
    return error(
        "FM0704",
        f"column `{name}` of dataset `{dataset.name}` is not in the source data",
        span.to_span() if span else None,
        "not in the data",
        help=hint or "declare the columns the files have",
    )
