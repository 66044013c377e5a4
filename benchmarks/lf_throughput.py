"""Labeling-function throughput: 20 LFs over N synthetic comments (default 1,000,000).

Ours, two ways, each as the labels stage runs it under `--engine duckdb` (the split's rows
read from Parquet, the `lf_*` columns added, the label matrix stacked from them):

- polars (what the stage now runs when every function has an exact polars form): the LFs
  lowered to polars expressions (`fmlang.lower.labels_polars`, run by
  `fmlang.backends.data.label_polars`), the rows read by DuckDB;
- SQL: the LFs lowered to one SQL query (`fmlang.lower.labels`) run by DuckDB, the stage's
  fallback and the reference.

Both compute `lower(text)`, `words(text)` and `length(text)` once per row for every function
that uses them and count `words()` from the UTF-8 bytes (`fmlang.backends.data.udfs`); the
SQL runs each regex only on the rows that contain one of its required literals
(`fmlang.lower.prefilter`), polars where that measured faster (`[$€£]\\s?\\d+`).

Baseline: the same 20 functions hand-written in Python and applied row by row with
`pandas.DataFrame.apply(axis=1)`, the usual way (Snorkel's `PandasLFApplier` does the same).
All three produce the full label matrix; the run checks they are identical, then prints the
times and ratios (wall clock), and the CPU time each took (the fairer figure on a shared
machine: DuckDB runs on `--threads` threads, polars on its own pool of one thread per core,
pandas on one). Imports are done before timing.

    flock /tmp/bench.lock .venv/bin/python benchmarks/lf_throughput.py \\
        [--rows 1000000] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmlang.api import check_text, compile_spec
from fmlang.backends.data.engine import connect
from fmlang.backends.data.label_polars import polars_label_table
from fmlang.backends.data.labeling import label_matrix
from fmlang.ir.nodes import Labels
from fmlang.lower.labels import lower_labels

SPEC = """\
dataset comments {
  source parquet("comments.parquet")
  schema {
    id: string @id
    text: text
  }
}

labels spam on comments {
  classes [ham, spam]
  lf check_out:  text ~ /check (it |this |my )?out/i -> spam
  lf subscribe:  lower(text) contains "subscribe" -> spam
  lf link:       text ~ /https?:\\/\\/\\S+|www\\.\\S+/i -> spam
  lf my_channel: text ~ /\\bmy (channel|videos?|page)\\b/i -> spam
  lf please:     contains_any(lower(text), ["please", "plz", "pls"]) -> spam
  lf money:      text ~ /[$€£]\\s?\\d+/ -> spam
  lf free:       lower(text) contains "free" -> spam
  lf shouting:   text ~ /[!?]{3,}/ -> spam
  lf long:       words(text) > 30 -> spam
  lf many_links: count(text, /https?:/) >= 2 -> spam
  lf visit:      starts_with(lower(text), "visit") -> spam
  lf follow:     lower(text) contains "follow me" -> spam
  lf song:       lower(text) contains "song" -> ham
  lf short:      words(text) < 5 -> ham
  lf love:       contains_any(lower(text), ["love", "great", "awesome"]) -> ham
  lf milestone:  text ~ /\\b(billion|million)\\b/i -> ham
  lf lyrics:     lower(text) contains "lyrics" -> ham
  lf question:   ends_with(text, "?") and length(text) < 80 -> ham
  lf year:       text ~ /\\b(19|20)\\d\\d\\b/ -> ham
  lf tiny:       length(text) < 12 -> ham
}
"""

HAM, SPAM, ABSTAIN = 0, 1, -1


def _regex(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    compiled = re.compile(pattern, flags)
    return lambda t: compiled.search(t) is not None


_CHECK = _regex(r"check (it |this |my )?out", re.I)
_LINK = _regex(r"https?://\S+|www\.\S+", re.I)
_CHANNEL = _regex(r"\bmy (channel|videos?|page)\b", re.I)
_MONEY = _regex(r"[$€£]\s?\d+")
_SHOUT = _regex(r"[!?]{3,}")
_MILESTONE = _regex(r"\b(billion|million)\b", re.I)
_YEAR = _regex(r"\b(19|20)\d\d\b")
_HTTP = re.compile(r"https?:")

PYTHON_LFS: list[tuple[str, Callable[[str], bool], int]] = [
    ("check_out", _CHECK, SPAM),
    ("subscribe", lambda t: "subscribe" in t.lower(), SPAM),
    ("link", _LINK, SPAM),
    ("my_channel", _CHANNEL, SPAM),
    ("please", lambda t: any(w in t.lower() for w in ("please", "plz", "pls")), SPAM),
    ("money", _MONEY, SPAM),
    ("free", lambda t: "free" in t.lower(), SPAM),
    ("shouting", _SHOUT, SPAM),
    ("long", lambda t: len(t.split()) > 30, SPAM),
    ("many_links", lambda t: len(_HTTP.findall(t)) >= 2, SPAM),
    ("visit", lambda t: t.lower().startswith("visit"), SPAM),
    ("follow", lambda t: "follow me" in t.lower(), SPAM),
    ("song", lambda t: "song" in t.lower(), HAM),
    ("short", lambda t: len(t.split()) < 5, HAM),
    ("love", lambda t: any(w in t.lower() for w in ("love", "great", "awesome")), HAM),
    ("milestone", _MILESTONE, HAM),
    ("lyrics", lambda t: "lyrics" in t.lower(), HAM),
    ("question", lambda t: t.endswith("?") and len(t) < 80, HAM),
    ("year", _YEAR, HAM),
    ("tiny", lambda t: len(t) < 12, HAM),
]

WORDS = [
    "this",
    "song",
    "is",
    "great",
    "love",
    "the",
    "video",
    "check",
    "out",
    "my",
    "channel",
    "please",
    "subscribe",
    "free",
    "money",
    "billion",
    "views",
    "lyrics",
    "follow",
    "me",
    "visit",
    "amazing",
    "best",
    "music",
    "ever",
    "2014",
    "watch",
    "again",
    "wow",
    "plz",
]
EXTRAS = ["http://bit.ly/x1", "www.example.com", "$50", "!!!", "?", "https://y.io/z"]


def synthetic(rows: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    texts = []
    for _ in range(rows):
        words = rng.choices(WORDS, k=rng.randint(1, 40))
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), rng.choice(EXTRAS))
        text = " ".join(words)
        texts.append(text.capitalize() if rng.random() < 0.5 else text)
    return pa.table({"id": [str(i) for i in range(rows)], "text": texts})


def pandas_apply(frame: pd.DataFrame) -> np.ndarray:
    def vote(row: pd.Series) -> list[int]:
        text = row["text"]
        return [label if fn(text) else ABSTAIN for _, fn, label in PYTHON_LFS]

    return np.array(frame.apply(vote, axis=1).tolist(), dtype=np.int64)


def compiled(folder: Path) -> Labels:
    result = check_text(SPEC, file="lf.fm", base=folder)
    assert result.ok, [d.message for d in result.diagnostics]
    return compile_spec(result).labels[0]


def ours_sql(folder: Path, threads: int) -> tuple[np.ndarray, list[str]]:
    """The built SQL in DuckDB, as the labels stage runs it (`SELECT *, lf_…`)."""
    labels = compiled(folder)
    query = lower_labels(labels)
    sql = query.sql.replace("run/data/comments/all.parquet", "comments.parquet")
    con = connect(folder, threads=threads)
    try:
        # DuckDB keeps the file's row order (preserve_insertion_order); the check below
        # compares the matrices row by row, so any reordering would fail it.
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return label_matrix(table, labels), list(query.functions)


def ours_polars(folder: Path) -> tuple[np.ndarray, list[str]]:
    """The stage's polars path: the same table, the `lf_*` columns computed by polars."""
    labels = compiled(folder)
    table, why_not = polars_label_table(folder, labels, "comments.parquet")
    assert table is not None, why_not
    return label_matrix(table, labels), [lf.name for lf in labels.functions]


def timed(run: Callable[[], tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    matrix, names = run()
    assert names == [name for name, _, _ in PYTHON_LFS]
    return matrix, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    table = synthetic(args.rows)
    import duckdb  # noqa: F401 - imported before timing, as a running `fmc run` has them
    import polars  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Row groups as the data stage's DuckDB COPY writes them (122,880 rows): the unit
        # DuckDB parallelises a scan over.
        pq.write_table(table, folder / "comments.parquet", row_group_size=122_880)
        fast, fast_s, fast_cpu = timed(lambda: ours_polars(folder))
        sql, sql_s, sql_cpu = timed(lambda: ours_sql(folder, args.threads))
    frame = table.to_pandas()
    start, cpu = time.perf_counter(), time.process_time()
    expected = pandas_apply(frame)
    pandas_s, pandas_cpu = time.perf_counter() - start, time.process_time() - cpu
    same = bool((fast == expected).all() and (sql == expected).all())
    print(f"{args.rows:,} rows x {len(PYTHON_LFS)} LFs; label matrices identical: {same}")
    print(f"  fmc, polars (the labels stage):     {fast_s:8.2f} s "
          f"({args.rows / fast_s:,.0f} rows/s)")  # fmt: skip
    print(f"  fmc, SQL in DuckDB ({args.threads} threads):    {sql_s:8.2f} s "
          f"({args.rows / sql_s:,.0f} rows/s)")  # fmt: skip
    print(f"  pandas row-by-row apply:            {pandas_s:8.2f} s "
          f"({args.rows / pandas_s:,.0f} rows/s)")  # fmt: skip
    print(f"  ratio: polars {pandas_s / fast_s:.1f}x, SQL {pandas_s / sql_s:.1f}x faster than "
          "pandas (target >= 20x)")  # fmt: skip
    print(f"  CPU time: polars {fast_cpu:.2f} s, SQL {sql_cpu:.2f} s, pandas {pandas_cpu:.2f} s "
          f"({pandas_cpu / fast_cpu:.1f}x and {pandas_cpu / sql_cpu:.1f}x less CPU)")  # fmt: skip
    if not same:
        raise SystemExit("the label matrices differ")


if __name__ == "__main__":
    main()
