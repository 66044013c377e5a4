"""What makes the label-matrix query fast never changes a label. Regex prefilters
(fmlang/lower/prefilter.py): every string a pattern matches (in DuckDB's RE2) contains one
of the pattern's required literals, and the prefiltered query equals the plain one on a
Unicode corpus, NULLs included. The byte-counting `words()` equals Python's `str.split()`."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

import fmlang.lower.labels as lowering
from fmlang.api import check_text, compile_spec
from fmlang.lower.prefilter import required_literals
from fmlang.lower.sql import SqlCompiler

PATTERNS = [
    r"(?i)check (it |this |my )?out",
    r"(?i)https?:\/\/\S+|www\.\S+",
    r"(?i)\bmy (channel|videos?|page)\b",
    r"[$€£]\s?\d+",
    r"[!?]{3,}",
    r"(?i)\b(billion|million)\b",
    r"\b(19|20)\d\d\b",
    r"https?:",
    r"(?i)\b[a-z0-9._%+-]+@(?:[a-z0-9-]+\.)+[a-z]{2,}\b",
    r"(?i)subscribe",
    r"(?i)ks",
    r"(?i)[sx]y",
    r"Straße|é+",
    r"(?i)\bok\b",
    r"(a|b)(c|d)?e",
    r"x{2,3}y",
    r"(?i)(?:free|cheap)\s+(?:money|cash)",
]
ALPHABET = [*"abcdeksxyoSKXYO!?$€£ @._-/:\n",
    "ſ", "K", "İ", "é", "ß", "check ", "CHECK MY OUT", "my Video", "www.", "HTTP://", "Million",
    "2014", "ok", "OK", "ks", "Kſ", "ſy", "Straße", "free  MONEY", "cheap cash", "!?!", "$ 5",
    "€9", "1999", "xxy", "ace", "bde", "ANA@EXAMPLE.COM", "ſubſcribe", "SUBSCRIBE", "https:",
]  # fmt: skip


def corpus(n: int = 3000, seed: int = 7) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = [None, "", " "]
    texts += ["".join(rng.choices(ALPHABET, k=rng.randint(1, 12))) for _ in range(n)]
    return texts


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_match_contains_a_required_literal(pattern: str) -> None:
    found = required_literals(pattern)
    assert found is not None, pattern
    literals, lower = found
    con = duckdb.connect()
    rows = con.execute(
        "SELECT t, lower(t) FROM unnest($texts) AS u(t) WHERE regexp_matches(t, $p)",
        {"texts": corpus(), "p": pattern},
    ).fetchall()
    assert rows, f"the corpus never matches {pattern!r}: the test would prove nothing"
    for text, lowered in rows:
        haystack = lowered if lower else text
        assert any(lit in haystack for lit in literals), (pattern, text, literals)


def test_patterns_without_a_safe_literal_get_no_prefilter() -> None:
    for pattern in ("a|", "x*", "[[:alpha:]]x", r"\d+", r"(?i)é", r"\x{e9}", "(?i:ab)c"):
        assert required_literals(pattern) is None or pattern == "(?i:ab)c", pattern


SPEC = """\
dataset d {
  source parquet("d.parquet")
  schema {
    id: string @id
    t: text
  }
}

labels l on d {
  classes [no, yes]
FUNCTIONS}
"""


def test_prefiltered_label_matrix_equals_the_plain_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = corpus(1500, seed=11)
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "t": texts}),
                   tmp_path / "d.parquet")  # fmt: skip
    functions = ""
    for i, pattern in enumerate(PATTERNS):
        body = pattern  # `/` is escaped in every pattern
        flags = ""
        if body.startswith("(?i)"):
            body, flags = body[4:], "i"
        regex = f"/{body}/{flags}"
        functions += f"  lf m{i}: t ~ {regex} -> yes\n"
        functions += f"  lf n{i}: t !~ {regex} -> no\n"
        functions += f"  lf c{i}: count(t, {regex}) >= 2 -> yes\n"
    result = check_text(SPEC.replace("FUNCTIONS", functions), file="s.fm", base=tmp_path)
    assert result.ok, [d.message for d in result.diagnostics]
    labels = compile_spec(result).labels[0]
    prefiltered = lowering.lower_labels(labels).sql
    assert prefiltered.count("CASE WHEN contains(") >= 2 * len(PATTERNS)
    monkeypatch.setattr(lowering, "PrefilteredCompiler", SqlCompiler)
    plain = lowering.lower_labels(labels).sql
    assert "CASE WHEN contains(" not in plain
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{tmp_path}'")

    def matrix(sql: str) -> list[tuple[object, ...]]:
        sql = sql.replace("run/data/d/all.parquet", "d.parquet")
        return con.execute(f"SELECT * FROM ({sql}) ORDER BY CAST(id AS INTEGER)").fetchall()

    assert matrix(prefiltered) == matrix(plain)


def test_words_counts_as_python_str_split() -> None:
    """`words()` (the Arrow UDF both engines run): Python's `str.split()` count, on ASCII
    text (counted from the bytes) and Unicode text (pyarrow), leading and trailing spaces,
    empty strings and NULLs included; slices and large strings too."""
    import pyarrow as pa

    from fmlang.backends.data.udfs import words

    rng = random.Random(3)
    pieces = ["a", "bc", " ", "  ", "\t", "\n", "\x0b", "\x1c", "\x1f", "é", "\u00a0", "\u3000"]
    for trial in range(600):
        alphabet = pieces[:9] if trial % 2 else pieces
        values: list[str | None] = [
            "".join(rng.choices(alphabet, k=rng.randint(0, 8))) if rng.random() > 0.1 else None
            for _ in range(rng.randint(1, 8))
        ]
        array = pa.array(values, pa.string())
        for variant in (array, array.slice(1), pa.array(values, pa.large_string())):
            expected = [None if v is None else len(v.split()) for v in variant.to_pylist()]
            assert words(variant).to_pylist() == expected, variant.to_pylist()
