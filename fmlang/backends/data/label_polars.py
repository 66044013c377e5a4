"""The label matrix in polars, where every function has an exact polars form.

The labels stage (`labeling.apply_labels`) runs a block this way under `--engine duckdb`
when `fmlang.lower.labels_polars` lowers all of its functions; otherwise (or if polars fails
at run time, e.g. a regex over Rust's size limit) it runs the block's SQL in DuckDB. Both
give the same table: the rows are read by DuckDB exactly as the SQL's `SELECT *` reads them,
and only the `lf_*` columns are computed by polars, from the columns the functions use.

The two functions polars has no exact built-in for are kernels here:

- `lower()`: DuckDB lower-cases each code point by itself (utf8proc's simple mapping);
  polars (Rust's `str::to_lowercase`) maps İ to two code points, Σ to ς at the end of a
  word (Rust's only context-dependent rule), and knows the newer Unicode version's letters.
  The code points where the two differ are found once per process by lowering all of them
  in both engines (`lower_fixes`, about 0.1 s): those whose DuckDB result polars leaves
  alone are replaced by it first (İ → i, Σ → σ), the rows holding any other one (letters
  newer than DuckDB's Unicode tables) are lower-cased by DuckDB itself.
- `words()`: the `fm_words` UDF's own function (`udfs.words`), on the Arrow data, 16,384
  rows at a time.

On all-ASCII text (checked from the bytes) `lower()` is polars' own, which agrees there.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fmlang.ir.expr import columns_used
from fmlang.ir.nodes import Labels
from fmlang.lower.labels_polars import Kernels, NoPolars, lower_labels_polars

_SIGMA = "\u03a3"  # Σ: lower-cased to ς by Rust at the end of a word, to σ by DuckDB


def polars_label_table(build_dir: Path, labels: Labels, source: str) -> tuple[Any, str]:
    """(the label-matrix table, "") computed with polars from the Parquet file `source`
    (relative to `build_dir`), or (None, why not) when DuckDB has to run the block."""
    import pyarrow as pa

    from fmlang.backends.data.engine import connect

    try:
        import polars as pl
    except ImportError:  # an install without it: the SQL runs as before
        return None, "polars is not installed"
    con = connect(build_dir)
    try:
        path = source.replace("'", "''")
        rows = con.sql(f"SELECT * FROM read_parquet('{path}')")
        kinds = {name: _kind(str(t)) for name, t in zip(rows.columns, rows.dtypes, strict=True)}
        try:
            lower_labels_polars(labels, kinds, kernels(ascii_text=False))  # expressible?
        except NoPolars as exc:
            return None, str(exc)
        table = rows.to_arrow_table()
    finally:
        con.close()
    used = sorted({c for lf in labels.functions if lf.expr is not None
                   for c in columns_used(lf.expr)})  # fmt: skip
    text = [c for c in used if kinds[c] == "text"]
    plan = lower_labels_polars(labels, kinds, kernels(all(_ascii(table.column(c)) for c in text)))
    if used:
        frame = pl.from_arrow(table.select(used))
        assert isinstance(frame, pl.DataFrame)
    else:  # only constants: a frame of the table's height to give them
        frame = pl.zeros(table.num_rows, pl.Int8, eager=True).to_frame("__fm_row")
    try:
        votes = plan.evaluate(frame)
    except pl.exceptions.PolarsError as exc:  # e.g. a regex beyond Rust's size limit
        return None, f"polars failed: {str(exc).splitlines()[0]}"
    for name in votes.columns:
        column = votes.get_column(name).to_arrow().cast(pa.int32())
        table = table.append_column(pa.field(name, pa.int32()), column)
    return table, ""


# Integers that fit polars' Int64 comparisons exactly. Floating-point columns are "other":
# the engines' NaN and FLOAT-versus-literal rules were not checked to agree.
_NUMBERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}


def _kind(duckdb_type: str) -> str:
    """A column's kind as the lowering knows them (text, integers and booleans)."""
    if duckdb_type == "VARCHAR":
        return "text"
    if duckdb_type == "BOOLEAN":
        return "bool"
    return "number" if duckdb_type in _NUMBERS else "other"


def kernels(ascii_text: bool) -> Kernels:
    """`lower()` and `words()` as polars expressions: on text known to be all ASCII,
    `lower()` is polars' own (the engines agree on ASCII), saving a Python call."""
    import polars as pl

    def lower(text: Any) -> Any:
        if ascii_text:
            return text.str.to_lowercase()
        return text.map_batches(exact_lower, return_dtype=pl.String, is_elementwise=True)

    def count(text: Any) -> Any:
        return text.map_batches(words, return_dtype=pl.Int64, is_elementwise=True)

    return Kernels(lower=lower, words=count)


def exact_lower(series: Any) -> Any:
    """DuckDB's `lower()` of a polars String series: polars' own on all-ASCII text (where
    the two agree), else with `lower_fixes` applied."""
    if _ascii(series.to_arrow()):
        return series.str.to_lowercase()
    replacements, duckdb_only = lower_fixes()
    text = series.str.replace_many(replacements) if replacements else series
    lowered = text.str.to_lowercase()
    if duckdb_only:
        rows = series.str.contains_any([chr(c) for c in duckdb_only]).arg_true()
        if len(rows):
            lowered = lowered.scatter(rows, _duckdb_lower(series.gather(rows)))
    return lowered


WORDS_CHUNK = 16_384  # rows per `udfs.words` call: its byte arrays stay in the CPU's cache


def words(series: Any) -> Any:
    """`fm_words` of a polars String series (Int64), a chunk of rows at a time (1.6x
    faster than one call over a million rows)."""
    import polars as pl
    import pyarrow as pa

    from fmlang.backends.data import udfs

    values = series.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    parts = [
        udfs.words(values.slice(start, WORDS_CHUNK)) for start in range(0, len(values), WORDS_CHUNK)
    ]
    counts = pa.concat_arrays(parts) if parts else pa.array([], pa.int64())
    return pl.Series(series.name, counts, dtype=pl.Int64)


def _ascii(values: Any) -> bool:
    """Whether every value of an Arrow string array is ASCII, from its UTF-8 bytes (a
    slice's whole buffer: a byte outside it can only make this say no)."""
    import numpy as np
    import pyarrow as pa

    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and int(np.frombuffer(data, np.uint8).max()) >= 0x80:
            return False
    return True


@functools.cache
def lower_fixes() -> tuple[dict[str, str], tuple[int, ...]]:
    """Where polars' `to_lowercase` differs from DuckDB's `lower`: (code point → DuckDB's
    result, replaced before polars lower-cases; code points DuckDB must lower-case)."""
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = np.arange(0x110000, dtype=np.uint32)
    codes = codes[(codes < 0xD800) | (codes > 0xDFFF)]
    data = codes.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
    widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    offsets = np.concatenate(([0], np.cumsum(widths))).astype(np.int64)
    chars = pa.LargeStringArray.from_buffers(
        len(codes), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)
    )
    theirs = _duckdb_lower_arrow(chars)
    ours = pl.Series(chars).str.to_lowercase().to_arrow()
    differ = pc.not_equal(theirs.cast(pa.large_string()), ours.cast(pa.large_string()))
    candidates = [int(c) for c in codes[np.asarray(differ.to_numpy(zero_copy_only=False))]]
    candidates.append(ord(_SIGMA))
    target = _duckdb_lower_arrow(pa.array([chr(c) for c in candidates])).to_pylist()
    fixed = pl.Series(target).str.to_lowercase().to_list()
    replacements: dict[str, str] = {}
    duckdb_only: list[int] = []
    for code, theirs_one, polars_of_it in zip(candidates, target, fixed, strict=True):
        if theirs_one == polars_of_it and theirs_one != _SIGMA:
            replacements[chr(code)] = theirs_one
        else:
            duckdb_only.append(code)
    return replacements, tuple(duckdb_only)


def _duckdb_lower(series: Any) -> Any:
    import polars as pl

    return pl.Series(series.name, _duckdb_lower_arrow(series.to_arrow()), dtype=pl.String)


def _duckdb_lower_arrow(values: Any) -> Any:
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(":memory:")
    try:
        con.register("fm_values", pa.table({"v": values}))
        return con.sql("SELECT lower(v) AS v FROM fm_values").to_arrow_table().column("v")
    finally:
        con.close()
