"""The label matrix in polars equals DuckDB's, cell for cell (DuckDB is the reference):
regexes translated to Rust's syntax (`fmlang.regex.to_rust`) match what RE2 matches on
every code point tried, `lower()` is DuckDB's on every code point, a property test runs a
block covering every function over Unicode text with NULLs in both engines, a block polars
cannot express falls back to DuckDB, and the labels stage takes the polars path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fmlang.regex as regex_module
from fmlang.api import build, check_paths, check_text, compile_spec
from fmlang.backends.data.engine import connect
from fmlang.backends.data.label_polars import exact_lower, polars_label_table
from fmlang.backends.run import RunOptions, run
from fmlang.ir.nodes import Labels
from fmlang.lower.labels import lower_labels
from fmlang.regex import to_rust
from tests.data_helpers import GRANT, TESTER, write_csv

# Code points where the engines' Unicode handling differs or has edges: ASCII, Latin-1 and
# Greek, the case-folding oddities (ſ, the Kelvin sign, İ, ı), the surrogate gap's edges,
# letters newer than RE2's and DuckDB's Unicode tables (U+1C89, U+A7CB, U+10D50), the top.
CODE_POINTS = [
    *range(0x0, 0x600), 0x1C89, 0x1E9E, 0x2028, 0x212A, 0x212B, 0x3000, 0xA7CB, 0xD7FF,
    0xE000, 0xFB00, 0xFFFF, 0x10000, 0x10D50, 0x1F600, 0x10FFFF,
]  # fmt: skip

PATTERNS = [
    r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"[\s\S]", r"[^\W]", r"[^\d\s]", r"\bx\b",
    r"(?i)\bk\b", r".", r"(?s).", r"^a", r"(?m)^a", r"a$", r"(?m)a$", r"(?i)k", r"(?i)s",
    r"(?i)[a-z]", r"(?i)[^k]", r"(?i)ſ", r"(?i)[ſ\x{212a}]x", r"(?i)[^\W]", r"(?i)\W",
    r"(?i)[\W]", r"(?i)[[:^lower:]]",
    r"(?i)[[:upper:]]", r"[[:punct:]]", r"(?i)[!-~]", r"(?i)x(?-i)k", r"(?i:[k])y",
    r"[$€£]\s?\d+", r"\x{e9}|é", r"[à-ÿ]", r"a\.b\-c\~\&", r"[\-\~\&\[\]]", r"\Qa.b\E",
    r"(?i)check (it |this |my )?out", r"(?i)https?:\/\/\S+|www\.\S+", r"\b(19|20)\d\d\b",
]  # fmt: skip


def chars(codes: list[int]) -> pa.Array:
    return pa.array([chr(c) for c in codes], pa.string())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_rust_patterns_match_what_re2_matches(pattern: str) -> None:
    """Every code point alone, then each in context ("xK y", "a\\nb", "ſs"), in polars
    (Rust `regex`) and DuckDB (RE2): the same matches and the same match counts."""
    rust = to_rust(pattern)
    assert rust is not None, pattern
    values = [chr(c) for c in CODE_POINTS]
    values += [f"x{v} y{v}" for v in values[::7]] + ["a\nb", "ſs kK", "a.b-c~&", "1999 2014"]
    series = pl.Series(values, dtype=pl.String)
    con = duckdb.connect()
    con.register("v", pa.table({"t": values}))
    found = con.execute(
        "SELECT regexp_matches(t, $p), len(regexp_extract_all(t, $p)) FROM v", {"p": pattern}
    ).fetchall()
    assert series.str.contains(rust).to_list() == [m for m, _ in found], (pattern, rust)
    assert series.str.count_matches(rust).to_list() == [n for _, n in found], (pattern, rust)


def _class(codes: list[int]) -> str:
    ranges: list[list[int]] = []
    for c in codes:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[" + "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges) + "]"


def test_caseless_characters_fold_to_themselves_in_both_engines() -> None:
    """Under `i`, `to_rust` writes the non-ASCII characters of the categories it calls
    caseless (`€`, `—`, `٣`) as they are: RE2 and Rust must each fold every one of them to
    itself alone, over all of Unicode. Two characters folding together differ in some bit
    of their code points: for each bit, the caseless characters with it set, matched
    case-insensitively, must match exactly themselves."""
    codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    caseless = [c for c in codes if c >= 0x80 and regex_module._caseless(c)]
    assert len(caseless) > 1000
    values = chars(codes)
    series = pl.Series(values)
    con = duckdb.connect()
    con.register("v", pa.table({"t": values}))
    patterns, expected = [], []
    for bit in range(21):
        half = [c for c in caseless if (c >> bit) & 1]
        if not half:  # no caseless character has this bit
            continue
        patterns.append(f"(?i){_class(half)}")
        expected.append(np.isin(np.array(codes), np.array(half)))
    columns = ", ".join(f"regexp_matches(t, ${i})" for i in range(1, len(patterns) + 1))
    re2 = con.execute(f"SELECT {columns} FROM v", patterns).fetchnumpy()
    for i, (pattern, members) in enumerate(zip(patterns, expected, strict=True)):
        assert (list(re2.values())[i] == members).all(), f"RE2, {i}"
        assert (series.str.contains(pattern).to_numpy() == members).all(), f"Rust, {i}"
        rust = to_rust(pattern)  # as translated: the class matched case-sensitively
        assert rust is not None and (series.str.contains(rust).to_numpy() == members).all()
    assert to_rust("(?i)€x") == "(?i)\\x{20ac}x"


def test_patterns_without_an_exact_rust_form_are_refused() -> None:
    for pattern in (r"\pL", r"\p{Greek}", r"[\PN]", r"(?i)é", r"(?i)[à-ÿ]", r"(?i:\x{1c89})"):
        assert to_rust(pattern) is None, pattern
    assert to_rust(r"é(?i)x") is not None  # a non-ASCII letter outside `i` is exact


def test_lower_is_duckdbs_on_every_code_point() -> None:
    """All of Unicode one code point at a time, and words where polars' own lower-casing
    differs (final sigma, İ, a letter newer than DuckDB's tables) next to plain ones."""
    codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    words = ["ΟΔΥΣΣΕΥΣ", "AΣ", "Σ", "aΣ.", "İstanbul", "\u1c89x", "ABC", "", None, "Éé"]
    values = pa.concat_arrays([chars(codes), pa.array(words, pa.string())])
    con = duckdb.connect()
    con.register("v", pa.table({"t": values}))
    expected = con.execute("SELECT lower(t) FROM v").fetchnumpy()["lower(t)"].tolist()
    series = pl.Series(values)
    assert exact_lower(series).to_list() == expected
    plain = series.str.to_lowercase().to_list()
    assert plain != expected  # polars alone differs: the test shows the fixes matter
    ascii_only = pl.Series(["Hello World", None, "ABC"])
    assert exact_lower(ascii_only).to_list() == ["hello world", None, "abc"]


SPEC = """\
dataset d {
  source parquet("d.parquet")
  schema {
    id: string @id
    t: text
    n: int
    f: bool
  }
}

labels l on d {
  classes [no, yes, maybe]
FUNCTIONS}
"""

FUNCTIONS = """\
  lf has_k:    t ~ /\\bk\\b/i -> yes
  lf no_digit: t !~ /\\d/ -> no
  lf space:    t ~ /\\s/ -> maybe
  lf word:     t ~ /^\\w+$/ -> yes
  lf dot:      t ~ /a.b/s -> maybe
  lf lines:    t ~ /^x$/m -> no
  lf money:    t ~ /[$€£]\\s?\\d+/ -> yes
  lf sharp:    t ~ /[ſs][^\\W]/i -> maybe
  lf cnt:      count(t, /[a-z]/i) >= 2 -> yes
  lf cnt_eq:   count(t, /\\d\\d/) == 1 -> no
  lf cnt_euro: count(t, /[€£]\\d/) == 0 -> maybe
  lf no_euro:  t !~ /€/ -> no
  lf lower_c:  lower(t) contains "iσ" -> yes
  lf lower_s:  lower(t) contains "ς" -> no
  lf lower_k:  lower(t) == "k" -> maybe
  lf any:      contains_any(lower(t), ["k", "é", "😀", ""]) and not (t contains "x") -> yes
  lf any_one:  contains_any(t, ["\u00a0"]) -> maybe
  lf starts:   starts_with(lower(t), "ab") or ends_with(t, "\u0301") -> no
  lf words_lt: words(t) < 2 -> no
  lf words_eq: words(t) == 3 -> yes
  lf length:   length(t) > 4 and length(t) <= 9 -> maybe
  lf num:      n in [2, 3, 5] or n in [7, 9] -> yes
  lf num_cmp:  n > 3 and n != 8 -> no
  lf flag:     f == true or not f -> maybe
  lf text_cmp: t < "b" -> no
  lf text_in:  lower(t) in ["a", "k", "ab c"] -> yes
"""

ALPHABET = [
    *"abkKsSxyzI019 $€£.\n\t\v\x1c", "\u00a0", "\u2028", "\u3000", "\u212a", "\u017f", "İ",
    "ı", "Σ", "σ", "ς", "é", "É", "e\u0301", "\u0301", "😀", "ß", "ẞ", "\u1c89", "\ua7cb",
    "ǅ", "ab c", "check out", " K ", "$ 5", "Iσ",
]  # fmt: skip

texts = st.lists(
    st.one_of(st.none(), st.lists(st.sampled_from(ALPHABET), max_size=8).map("".join)),
    min_size=1,
    max_size=40,
)


def compiled(folder: Path, functions: str = FUNCTIONS) -> Labels:
    result = check_text(SPEC.replace("FUNCTIONS", functions), file="s.fm", base=folder)
    assert result.ok, [d.message for d in result.diagnostics]
    return compile_spec(result).labels[0]


def write_rows(folder: Path, values: list[str | None]) -> None:
    count = len(values)
    numbers = [None if i % 5 == 4 else i % 11 for i in range(count)]
    flags = [None if i % 3 == 2 else i % 2 == 0 for i in range(count)]
    table = pa.table({"id": [str(i) for i in range(count)], "t": values, "n": numbers,
                      "f": flags}, schema=pa.schema([("id", pa.string()), ("t", pa.string()),
                      ("n", pa.int64()), ("f", pa.bool_())]))  # fmt: skip
    pq.write_table(table, folder / "d.parquet")


def sql_table(folder: Path, labels: Labels) -> Any:
    sql = lower_labels(labels).sql.replace("run/data/d/all.parquet", "d.parquet")
    con = connect(folder)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(values=texts)
def test_polars_label_matrix_equals_duckdbs(tmp_path: Path, values: list[str | None]) -> None:
    labels = compiled(tmp_path)
    write_rows(tmp_path, values)
    table, why_not = polars_label_table(tmp_path, labels, "d.parquet")
    assert table is not None, why_not
    expected = sql_table(tmp_path, labels)
    assert table.schema == expected.schema
    for name in expected.column_names:
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), (
            name,
            values,
        )


def test_every_function_votes_and_abstains(tmp_path: Path) -> None:
    """The corpus the property test draws from makes every function vote somewhere and
    abstain somewhere, so none of its columns is compared as a constant."""
    labels = compiled(tmp_path)
    values = [*ALPHABET, None, "ab c", "k", "xkx", "Iσ ab", "a\nb", "x\nx", "a5 $ 5 12",
              "abcde", "ς", "IΣ", "ſX", "a b\u00a0c", "x\u2028y z", "£1 €9"]  # fmt: skip
    write_rows(tmp_path, values)
    table, why_not = polars_label_table(tmp_path, labels, "d.parquet")
    assert table is not None, why_not
    expected = sql_table(tmp_path, labels)
    for lf in labels.functions:
        column = np.array(table.column(f"lf_{lf.name}").to_pylist())
        assert (column != -1).any() and (column == -1).any(), lf.name
        assert column.tolist() == expected.column(f"lf_{lf.name}").to_pylist(), lf.name


def test_the_stage_matrix_is_int8_with_the_tables_votes(tmp_path: Path) -> None:
    """`labeling.label_matrix`: the votes as int8 (20 MB per million rows of 20 functions,
    not int64's 160), cell for cell the `lf_*` columns."""
    from fmlang.backends.data.labeling import label_matrix

    labels = compiled(tmp_path)
    write_rows(tmp_path, [*ALPHABET, None, "IΣ ab"])
    table = sql_table(tmp_path, labels)
    matrix = label_matrix(table, labels)
    assert matrix.dtype == np.int8 and matrix.shape == (table.num_rows, len(labels.functions))
    for j, lf in enumerate(labels.functions):
        assert matrix[:, j].tolist() == table.column(f"lf_{lf.name}").to_pylist(), lf.name


def test_a_large_table_in_many_batches_gives_duckdbs_matrix(tmp_path: Path) -> None:
    """200,000 rows: polars runs the kernels (`lower`, `words`, prefiltered regexes) a batch
    at a time, and DuckDB reads the Parquet in row groups; the matrix is still DuckDB's."""
    import random

    rng = random.Random(5)
    values = [
        None if rng.random() < 0.05 else "".join(rng.choices(ALPHABET, k=rng.randint(0, 9)))
        for _ in range(200_000)
    ]
    labels = compiled(tmp_path)
    write_rows(tmp_path, values)
    table, why_not = polars_label_table(tmp_path, labels, "d.parquet")
    assert table is not None, why_not
    assert table.equals(sql_table(tmp_path, labels))


def test_python_functions_are_left_to_the_executor(tmp_path: Path) -> None:
    """A Python function's column is -1 on every row, as in the SQL (the executor fills it
    in), also in a block of Python functions only, which reads no column."""
    for functions in ('  lf py: python("m:f")\n', FUNCTIONS + '  lf py: python("m:f")\n'):
        labels = compiled(tmp_path, functions)
        write_rows(tmp_path, ["a", None, "b c"])
        table, why_not = polars_label_table(tmp_path, labels, "d.parquet")
        assert table is not None, why_not
        assert table.column("lf_py").to_pylist() == [-1, -1, -1]
        assert table.equals(sql_table(tmp_path, labels))


@pytest.mark.parametrize(
    "function",
    [
        "lf letters: t ~ /\\pL/ -> yes",  # Unicode classes: tables differ by version
        'lf upper:   upper(t) contains "K" -> yes',  # no exact polars upper()
        "lf sum:     n + 1 > 3 -> yes",  # arithmetic
        "lf fold:    t ~ /é/i -> yes",  # a non-ASCII letter under `i`
    ],
)
def test_a_function_polars_cannot_express_falls_back_to_duckdb(
    tmp_path: Path, function: str
) -> None:
    labels = compiled(tmp_path, FUNCTIONS + f"  {function}\n")
    write_rows(tmp_path, ["Kö", "é É", None, "abc", "x"])
    table, why_not = polars_label_table(tmp_path, labels, "d.parquet")
    assert table is None and why_not
    assert sql_table(tmp_path, labels).num_rows == 5  # what the stage runs instead


STAGE_SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
  }
  split { train 50%, test 50% by hash(id) }
GRANT}

labels l on c.train {
  classes [ham, spam]
  lf link:  text ~ /https?:/i -> spam
  lf sub:   lower(text) contains "subscribe" -> spam
  lf short: words(text) < 4 -> ham
  EXTRA
  model majority(tie = abstain)
  apply_to [c.test]
GRANT}
""".replace("GRANT", GRANT)


def run_stage(tmp_path: Path, extra: str) -> list[Any]:
    data = [[str(i), t] for i, t in enumerate(["check http://x.io", "Subscribe İΣ now",
            "nice song", "love this song so much", "subscribe http://y.io ok"] * 6)]  # fmt: skip
    write_csv(tmp_path / "c.csv", ["id", "text"], data)
    spec = tmp_path / "s.fm"
    spec.write_text(STAGE_SPEC.replace("EXTRA", extra), encoding="utf-8")
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    build(result, tmp_path / "b", only_if_stale=True)  # as tests.data_helpers.run_spec
    lines: list[Any] = []  # text, or rich tables
    options = RunOptions(tmp_path / "b", spec, "labels", TESTER, log=lambda x: lines.append(x))
    run(compile_spec(result), options, spec.read_text(encoding="utf-8"))
    return lines


@pytest.mark.parametrize(
    ("extra", "path"),
    [("lf song: lower(text) contains \"song\" -> ham", "polars"),
     ("lf song: text ~ /\\pL{5}/ -> ham", "SQL in DuckDB")],
)  # fmt: skip
def test_the_labels_stage_takes_the_polars_path_where_it_can(
    tmp_path: Path, extra: str, path: str
) -> None:
    """The labels stage and its `apply_to` stage run polars (or DuckDB, for a block polars
    cannot express), and the rows they write hold the SQL's label matrix either way."""
    lines = run_stage(tmp_path, extra)
    taken = [line for line in lines if isinstance(line, str) and "label matrix:" in line]
    assert len(taken) == 2 and all(f"label matrix: {path}" in line for line in taken), lines
    build = tmp_path / "b"
    for rows_file, query in (
        ("run/labels/l.parquet", "labels/l.duckdb.sql"),
        ("run/labels/l/c/test.parquet", "labels/l/c/test.duckdb.sql"),
    ):
        written = pq.read_table(build / rows_file)
        con = connect(build)
        try:
            sql = (build / query).read_text(encoding="utf-8").strip().rstrip(";")
            expected = con.sql(sql).to_arrow_table()
        finally:
            con.close()
        for name in expected.column_names:
            assert written.column(name).to_pylist() == expected.column(name).to_pylist(), name
