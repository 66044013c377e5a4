"""Data that is never silently wrong: one regex dialect on every engine, casts and label
mappings that cannot turn values into NULL unnoticed, sources checked by `fmc check`, and
nested and keyed JSON read by field path."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmlang.api import check_paths
from fmlang.errors import StageError
from fmlang.regex import RegexError, parse, re2_problem, to_java
from tests.data_helpers import GRANT, rows, run_spec, write_csv

ROOT = Path(__file__).resolve().parent.parent
WRENCH = ROOT / "examples" / "youtube_spam" / "data" / "wrench"
RAW = ROOT / "examples" / "youtube_spam" / "data" / "raw"

# ---- one regex dialect ------------------------------------------------------------------

# Text where the engines' defaults differ: accents (precomposed and combining), CJK, emoji
# (outside the BMP), non-ASCII digits and spaces, line separators, case-folding oddities.
ALPHABET = [
    "a", "A", "b", "i", "I", "k", "K", "s", "S", "z", "0", "7", "_", " ", "\t", "\n", "\r",
    "\x0b", ".", "-", "[", "é", "É", "e\u0301", "ß", "ſ", "\u212a", "İ", "ı", "東", "京",
    "😀", "١", "٣", "\u00a0", "\u3000", "\u2028", "\u0085", "Ω", "ω",
]  # fmt: skip
CORPUS = [
    "", "a", "cat", "the cat sat", "café", "CAFÉ", "naïve cat", "東京 tokyo", "😀 emoji",
    "e\u0301", "١٢٣ digits", "\u00a0nbsp\u3000", "a\nb", "a\n", "\r\n", "x\u2028y", "a\u0085",
    "STRASSE straße", "K\u212a", "\u017f", "a.b", "a&b", "[", "Ωmega αβγ", "tab\there",
    "v\x0bv", "aaa", "_under_", "İ ı", "Istanbul ıi",
]  # fmt: skip
PATTERNS = [
    r"\w+", r"\bcat\b", r"\d", r"\s", r"\S+", r"\W", r"^a.$", r"(?m)^a$", r"(?s)a.b", r"a.b",
    r"(?i)straße", r"(?i)é", r"(?i)\w", r"(?i)k", r"(?i)i", r"(?i)[^i]", r"(?i)[h-j]+",
    r"[[:alpha:]]+", r"[[:space:]]", r"[^\W\d]", r"\pL+", r"\p{Han}", r"\PL", r"[\p{Greek}\d]",
    r"\x{e9}", r"caf\x{e9}\z", r"\Qa.b\E", r"(?P<n>a)+", r"$", r"^", r"(?m)$", r"a{,3}",
    r"[]a]", r"[a&&b]", r"[[]", r".", r"(?i)[a-z]+", r"\x{1F600}", r"[^a]", r"\v", r"[\v]",
    r"\.", r"(?i:A)b", r"(a|b)*c", r"\b", r"[^\n]+", r"\A\s*\z", r"(?i)\bI\b", r"[\d\s]+$",
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "where", "hint"),
    [
        (r"now\Z", (3, 5), "\\z"),
        (r"a*+b", (1, 3), "drop the `+`"),
        (r"x(?>ab)", (1, 4), "lookarounds"),
        (r"(?P<w>x)(?P=w)", (8, 12), "backreferences"),
        (r"check(?! out)", (5, 8), "lookarounds"),
        (r"(\w+) \1", (6, 8), "backreferences"),
        (r"a{1001}", (1, 7), "1000"),
        (r"(?U)a", (2, 3), "lazy"),
        (r"a\C", (1, 3), "byte"),
        (r"\Bx", (0, 2), None),
        (r"(ab", (2, 3), None),
    ],
)
def test_patterns_outside_the_dialect_are_refused_at_the_offending_part(
    pattern: str, where: tuple[int, int], hint: str | None
) -> None:
    with pytest.raises(RegexError) as caught:
        parse(pattern)
    assert (caught.value.start, caught.value.end) == where
    if hint:
        assert hint in (caught.value.hint or "")


@pytest.mark.parametrize(
    "pattern", [r"\x{e9}", r"caf\z", r"\Qa.b\E", r"(?<name>a)", r"(?P<n>a)", r"\_", r"a{,3}"]
)
def test_re2_syntax_that_python_refuses_is_accepted(pattern: str) -> None:
    parse(pattern)
    assert re2_problem(pattern) is None


def test_what_the_dialect_accepts_re2_accepts() -> None:
    """fmc's reading never lets through what RE2 would refuse at run time."""
    for pattern in PATTERNS:
        parse(pattern)
        assert re2_problem(pattern) is None, pattern


_LITERALS = [c for c in ALPHABET if c not in ".[-\n\r\t\x0b"] + ["\\.", "\\[", "\\-"]
_CLASS_ITEMS = [
    "a-z",
    "A-Z",
    "0-9",
    "\\d",
    "\\w",
    "\\s",
    "\\W",
    "\\D",
    "é",
    "ı",
    "İ",
    "_",
    "[:alpha:]",
    "[:^space:]",
    "\\pL",
    "\\p{Greek}",
    "東",
    "\\x{1F600}",
    "i",
]
_ESCAPES = [
    ".",
    "\\d",
    "\\w",
    "\\s",
    "\\D",
    "\\W",
    "\\S",
    "\\pL",
    "\\PL",
    "\\p{Han}",
    "\\x{e9}",
    "\\b",
    "^",
    "$",
    "\\A",
    "\\z",
]


def _atoms() -> st.SearchStrategy[str]:
    classes = st.builds(
        lambda neg, items: f"[{'^' if neg else ''}{''.join(items)}]",
        st.booleans(),
        st.lists(st.sampled_from(_CLASS_ITEMS), min_size=1, max_size=3),
    )
    return st.one_of(
        st.sampled_from(_LITERALS),
        st.sampled_from(_ESCAPES),
        classes,
    )


def _patterns() -> st.SearchStrategy[str]:
    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.builds(
            lambda x, q: f"(?:{x}){q}",
            inner,
            st.sampled_from(["*", "+", "?", "{1,2}", "*?", "{2}"]),
        )
        group = st.builds(
            lambda x, g: f"({g}{x})", inner, st.sampled_from(["", "?:", "?i:", "?s:", "?P<g>"])
        )
        concat = st.builds(lambda a, b: a + b, inner, inner)
        alternation = st.builds(lambda a, b: f"{a}|{b}", inner, inner)
        return st.one_of(quantified, group, concat, alternation)

    body = st.recursive(_atoms(), grow, max_leaves=6)
    return st.builds(lambda f, b: f + b, st.sampled_from(["", "(?i)", "(?m)", "(?s)"]), body)


_texts = st.lists(st.sampled_from(ALPHABET), max_size=8).map("".join)


@pytest.fixture(scope="module")
def duck() -> object:
    import duckdb

    return duckdb.connect(":memory:")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=_patterns(), texts=st.lists(_texts, min_size=1, max_size=4))
def test_duckdb_matches_what_re2_matches(duck: object, pattern: str, texts: list[str]) -> None:
    """DuckDB's regexp functions and RE2 itself (google-re2) agree on Unicode text."""
    re2 = pytest.importorskip("re2")
    parsed = parse(pattern)
    assert re2_problem(pattern) is None, pattern
    compiled = re2.compile(pattern)
    for text in texts:
        found, count = duck.execute(  # type: ignore[attr-defined]
            "SELECT regexp_matches(?, ?), len(regexp_extract_all(?, ?))",
            [text, pattern, text, pattern],
        ).fetchone()
        assert found == (compiled.search(text) is not None), (pattern, text)
        if parsed.shortest > 0:  # `count` only takes patterns that cannot match empty
            assert count == sum(1 for _ in compiled.finditer(text)), (pattern, text)


def _random_patterns(n: int, seed: int = 17) -> list[str]:
    """The property test's constructs, drawn with a fixed seed (one JVM call checks all)."""
    rng = random.Random(seed)
    atoms = [*_LITERALS, ".", "\\d", "\\w", "\\s", "\\W", "\\pL", "\\b", "^", "$", "\\z"]

    def piece(depth: int) -> str:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            if rng.random() < 0.25:
                items = "".join(rng.sample(_CLASS_ITEMS, rng.randint(1, 3)))
                return f"[{'^' if rng.random() < 0.3 else ''}{items}]"
            return rng.choice(atoms)
        if roll < 0.6:
            return f"(?:{piece(depth + 1)}){rng.choice(['*', '+', '?', '{1,2}', '+?'])}"
        if roll < 0.75:
            return f"({rng.choice(['', '?i:', '?s:'])}{piece(depth + 1)})"
        if roll < 0.9:
            return piece(depth + 1) + piece(depth + 1)
        return f"{piece(depth + 1)}|{piece(depth + 1)}"

    return [rng.choice(["", "(?i)", "(?m)", "(?s)"]) + piece(0) for _ in range(n)]


JAVA_MATCH = """
import java.io.*; import java.nio.charset.StandardCharsets; import java.util.HexFormat;
import java.util.regex.*;
public class Match { public static void main(String[] a) throws Exception {
  BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
  HexFormat hex = HexFormat.of(); StringBuilder out = new StringBuilder(); String line;
  while ((line = in.readLine()) != null) {
    String[] p = line.split(" ", -1);
    Matcher m = Pattern.compile(new String(hex.parseHex(p[0]), StandardCharsets.UTF_8))
        .matcher(new String(hex.parseHex(p[1]), StandardCharsets.UTF_8));
    int n = 0; boolean any = false; while (m.find()) { n++; any = true; }
    out.append(any ? 1 : 0).append(' ').append(n).append('\\n'); }
  System.out.print(out); } }
"""


def test_spark_patterns_match_what_duckdb_matches(duck: object, tmp_path: Path) -> None:
    """The Spark dialect's java.util.regex rewrite matches exactly what RE2 (DuckDB) does:
    `find` for `~`, and the number of matches for `count` (patterns that cannot be empty)."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no Java runtime")
    cases, lines = [], []
    for pattern in PATTERNS + _random_patterns(250):
        parsed = parse(pattern)
        for text in CORPUS:
            found, count = duck.execute(  # type: ignore[attr-defined]
                "SELECT regexp_matches(?, ?), len(regexp_extract_all(?, ?))",
                [text, pattern, text, pattern],
            ).fetchone()
            cases.append((pattern, text, int(found), count, parsed.shortest))
            lines.append(parsed.java.encode().hex() + " " + text.encode().hex())
    source = tmp_path / "Match.java"
    source.write_text(JAVA_MATCH, encoding="utf-8")
    done = subprocess.run([java, str(source)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = done.stdout.splitlines()
    assert len(results) == len(cases)
    wrong = []
    for (pattern, text, found, count, shortest), got in zip(cases, results, strict=True):
        java_found, java_count = map(int, got.split())
        if java_found != found or (shortest > 0 and java_count != count):
            wrong.append((pattern, text, found, count, java_found, java_count, to_java(pattern)))
    assert not wrong, wrong[:10]


def test_spark_sql_carries_the_java_pattern() -> None:
    from fmlang.ir.expr import ColumnRef, RegexLit
    from fmlang.lower.sql import DUCKDB, SPARK, SqlCompiler

    regex = RegexLit(pattern=r"\bfree\b", flags="i")
    assert SqlCompiler(DUCKDB).sql(regex) == r"'(?i)\bfree\b'"
    spark = SqlCompiler(SPARK).sql(regex)
    assert spark.startswith("'(?iu)(?-iu:(?:(?<=[0-9A-Z_a-z])") and "\\\\b" not in spark
    match = SqlCompiler(SPARK).regex_match(SqlCompiler(SPARK).sql(ColumnRef(name="t")), r"\d")
    assert match == "(`t` RLIKE '[0-9]')"


# ---- casts and labels that become NULL ---------------------------------------------------


def _cast_project(tmp_path: Path, priority: str = "", gold: str = "") -> Path:
    write_csv(
        tmp_path / "d.csv",
        ["id", "priority", "CLASS"],
        [[1, "5", "spam"], [2, "x7", "ham"], [3, "", "spam"], [4, "9", "eggs"], [5, "8", "1"]],
    )
    spec = tmp_path / "d.fm"
    spec.write_text(
        "dataset d {\n"
        '  source csv("d.csv", header = true)\n'
        "  schema {\n"
        "    id: string @id\n"
        f"    priority: int {priority}\n"
        f"    CLASS: label[ham, spam] @gold {gold}\n"
        f"  }}\n{GRANT}}}\n",
        encoding="utf-8",
    )
    return spec


def _report(build: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((build / "run/data/d/report.json").read_text())
    return loaded


def test_values_that_do_not_convert_fail_the_run_by_default(tmp_path: Path) -> None:
    spec = _cast_project(tmp_path, gold="{ on_cast_error = null }")
    with pytest.raises(StageError) as caught:
        run_spec(spec, tmp_path / "b", until="data")
    (problem,) = caught.value.diagnostics
    assert problem.code == "FM0740"
    assert "`priority`" in problem.message and "1 value" in problem.message
    assert problem.primary_span is not None and problem.primary_span.line == 5
    assert problem.notes == ("`priority` (int): 1 value not convertible to `int`, e.g. 'x7'",)
    assert "on_cast_error = null" in (problem.help or "")


def test_gold_labels_outside_the_classes_fail_the_run(tmp_path: Path) -> None:
    spec = _cast_project(tmp_path, priority="{ on_cast_error = null }")
    with pytest.raises(StageError) as caught:
        run_spec(spec, tmp_path / "b", until="data")
    (problem,) = caught.value.diagnostics
    assert problem.code == "FM0740"
    assert problem.notes == ("`CLASS` (label): 1 value not among the classes, e.g. 'eggs'",)


def test_on_cast_error_null_keeps_the_row_and_counts_it(tmp_path: Path) -> None:
    spec = _cast_project(tmp_path, "{ on_cast_error = null }", "{ on_cast_error = null }")
    build = tmp_path / "b"
    run_spec(spec, build, until="data")
    got = rows(build / "run/data/d/all.parquet")
    assert [(r["id"], r["priority"], r["CLASS"]) for r in got] == [
        ("1", 5, "spam"), ("2", None, "ham"), ("3", None, "spam"), ("4", 9, None),
        ("5", 8, "spam"),
    ]  # fmt: skip
    typed = _report(build)["rules"][1]  # type: ignore[index]
    # the empty priority of row 3 is a missing value, not a failed cast
    assert typed["cast_nulls"] == {"priority": 1, "CLASS": 1}


def test_on_cast_error_drop_removes_the_rows_in_a_reported_step(tmp_path: Path) -> None:
    spec = _cast_project(tmp_path, "{ on_cast_error = drop }", "{ on_cast_error = drop }")
    build = tmp_path / "b"
    run_spec(spec, build, until="data")
    assert [r["id"] for r in rows(build / "run/data/d/all.parquet")] == ["1", "3", "5"]
    rules = _report(build)["rules"]
    assert rules[1]["cast_nulls"] == {"priority": 1, "CLASS": 1}  # type: ignore[index]
    assert rules[2]["rule"] == "drop rows whose priority, CLASS did not convert"  # type: ignore[index]
    assert (rules[2]["rows_in"], rules[2]["rows_out"]) == (5, 3)  # type: ignore[index]


def test_a_wrong_type_on_every_value_fails_instead_of_nulling_the_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", ["id", "priority"], [[i, i * 3] for i in range(50)])
    spec = tmp_path / "d.fm"
    spec.write_text(
        'dataset d {\n  source csv("d.csv")\n  schema {\n    id: string @id\n'
        f"    priority: date\n  }}\n{GRANT}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(StageError) as caught:
        run_spec(spec, tmp_path / "b", until="data")
    (problem,) = caught.value.diagnostics
    assert problem.code == "FM0740" and "50 values" in problem.message
    assert "e.g. '0', '3', '6'" in problem.notes[0]


# ---- sources checked at check time -------------------------------------------------------


def _spec(tmp_path: Path, source: str, schema: str) -> Path:
    spec = tmp_path / "s.fm"
    spec.write_text(
        f"dataset d {{\n  source {source}\n  schema {{\n{schema}\n  }}\n{GRANT}}}\n",
        encoding="utf-8",
    )
    return spec


def _codes(spec: Path) -> list[tuple[str, int]]:
    result = check_paths([spec], data=True)
    return [(d.code, d.primary_span.line if d.primary_span else 0) for d in result.diagnostics]


def test_a_source_that_matches_nothing_is_a_check_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 'csv("data/*.csv")', "    id: string")
    assert _codes(spec) == [("FM0388", 2)]
    assert check_paths([spec]).ok, "the library default does not look at data"
    write_csv(tmp_path / "data" / "a.csv", ["id"], [[1]])
    assert _codes(spec) == []


def test_a_column_missing_from_the_header_is_a_check_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", ["id", "CONTENT"], [[1, "hi"]])
    spec = _spec(tmp_path, 'csv("d.csv")', "    id: string\n    CONTNT: text")
    result = check_paths([spec], data=True)
    (problem,) = result.diagnostics
    assert (problem.code, problem.primary_span.line) == ("FM0389", 5)  # type: ignore[union-attr]
    assert problem.help == "did you mean `CONTENT`?"


def test_json_and_parquet_columns_and_types_are_checked(tmp_path: Path) -> None:
    records = [{"id": 1, "meta": {"when": 3, "tags": ["a"]}, "text": "hi"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    spec = _spec(
        tmp_path,
        'jsonl("d.jsonl")',
        '    id: int\n    when: date { from = "meta.when" }\n    tags: int { from = "meta.tags" }'
        '\n    who: string { from = "meta.who" }\n    text: string',
    )
    assert _codes(spec) == [("FM0390", 5), ("FM0390", 6), ("FM0389", 7)]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1], "day": pa.array([0], pa.date32())}), tmp_path / "p.pq")
    spec = _spec(tmp_path, 'parquet("p.pq")', "    id: string\n    day: int\n    gone: string")
    assert _codes(spec) == [("FM0390", 5), ("FM0389", 6)]


def test_checking_sources_imports_no_engine(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", ["id"], [[1]])
    (tmp_path / "d.jsonl").write_text('{"id": 1}\n')
    spec = tmp_path / "s.fm"
    spec.write_text(
        f'dataset a {{\n  source csv("d.csv")\n  schema {{ id: string }}\n{GRANT}}}\n'
        f'dataset b {{\n  source jsonl("d.jsonl")\n  schema {{ id: int }}\n{GRANT}}}\n'
    )
    code = (
        "import sys\nfrom pathlib import Path\nfrom fmlang.api import check_paths\n"
        f"assert check_paths([Path({str(spec)!r})], data=True).ok\n"
        "print(sorted(m for m in ('duckdb', 'pyarrow', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_fifo_source_is_not_opened_by_check(tmp_path: Path) -> None:
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "a.csv")  # first in order, and reading it would block
    write_csv(tmp_path / "b.csv", ["id"], [[1]])
    spec = _spec(tmp_path, 'csv("*.csv")', "    id: string")
    assert _codes(spec) == []  # the regular file is the one looked at
    spec = _spec(tmp_path, 'csv("a.csv")', "    id: string")
    assert _codes(spec) == [("FM0388", 2)]  # a FIFO is no data file, at run time either


# ---- nested and keyed JSON ---------------------------------------------------------------


def test_wrench_files_read_by_key_and_field_path_equal_the_csv_rows(tmp_path: Path) -> None:
    for name in ("train", "valid", "test"):
        shutil.copy(WRENCH / f"{name}.json", tmp_path / f"{name}.json")
    shutil.copytree(RAW, tmp_path / "raw")
    spec = tmp_path / "w.fm"
    spec.write_text(
        'dataset wrench {\n  source json("[tv]*.json", keyed = "id")\n  schema {\n'
        '    id: string @id\n    text: text { from = "data.text" }\n'
        f"    label: label[ham, spam] @gold\n  }}\n{GRANT}}}\n"
        'dataset raw {\n  source csv("raw/*.csv")\n  schema {\n'
        "    COMMENT_ID: string @id\n    CONTENT: text\n    CLASS: label[ham, spam] @gold\n"
        f"  }}\n{GRANT}}}\n",
        encoding="utf-8",
    )
    assert _codes(spec) == []
    build = tmp_path / "b"
    run_spec(spec, build, until="data")
    wrench = rows(build / "run/data/wrench/all.parquet")
    raw = rows(build / "run/data/raw/all.parquet")
    assert len(wrench) == len(raw) == 1956
    assert Counter((r["text"], r["label"]) for r in wrench) == Counter(
        (r["CONTENT"], r["CLASS"]) for r in raw
    )
    first = json.loads((WRENCH / "test.json").read_text())["0"]
    assert wrench[0] == {"id": "0", "text": first["data"]["text"], "label": "spam"}
    assert len({r["id"] for r in wrench}) < 1956, "keys repeat across the three files"


def test_nested_jsonl_fields_are_read_by_path(tmp_path: Path) -> None:
    records = [
        {"id": 1, "meta": {"user": {"name": "ana"}, "score": "0.5"}, "text": "a"},
        {"id": 2, "meta": {"user": {"name": "bo"}, "score": 2}, "text": "b"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    spec = _spec(
        tmp_path,
        'jsonl("d.jsonl")',
        '    id: int @id\n    who: string { from = "meta.user.name" }\n'
        '    score: float { from = "meta.score" }',
    )
    build = tmp_path / "b"
    run_spec(spec, build, until="data")
    assert rows(build / "run/data/d/all.parquet") == [
        {"id": 1, "who": "ana", "score": 0.5},
        {"id": 2, "who": "bo", "score": 2.0},
    ]


# ---- the column options in the formatter and the editor ----------------------------------


def test_column_options_are_formatted_and_completed() -> None:
    from lsprotocol import types

    from fmlang.fmt import format_text
    from fmlang.lsp.completion import complete
    from fmlang.lsp.positions import LineIndex

    text = (
        "dataset d {\n  schema {\n    id: string @id\n"
        '    body: text {from="data.text",on_cast_error=null}\n  }\n}\n'
    )
    formatted = format_text(text, "d.fm").text
    assert formatted is not None
    assert '    body: text { from = "data.text", on_cast_error = null }\n' in formatted
    assert format_text(formatted, "d.fm").text == formatted

    def labels(source: str) -> list[str]:
        last = source.split("\n")[-1]
        position = types.Position(line=source.count("\n"), character=len(last))
        return [item.label for item in complete(source, LineIndex(source), position, None)]

    head = "dataset d {\n  schema {\n    p: int { "
    assert labels(head + "on") == ["on_cast_error", "from"]
    assert labels(head + "on_cast_error = ") == ["fail", "null", "drop"]


def test_a_tab_separated_csv_is_read_as_duckdb_sniffs_it(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('id\t"body, quoted"\tCLASS\n1\thi\t0\n')
    spec = _spec(tmp_path, 'csv("d.csv")', "    id: string\n    CLASS: label[a, b]")
    assert _codes(spec) == []
    spec = _spec(tmp_path, 'csv("d.csv")', "    id: string\n    CLAS: label[a, b]")
    assert _codes(spec) == [("FM0389", 5)]
