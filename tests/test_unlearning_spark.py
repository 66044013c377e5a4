"""`fmc run --engine spark` applies forget requests as the DuckDB engine does: the same rows
out, the same counts per request in the data report, the same audit entries. One Spark
session (10-20 s to start); skipped where Java is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fmlang.backends.data.spark import _java
from tests.data_helpers import GRANT, write_csv
from tests.test_spark_equality import run_engine

pytestmark = pytest.mark.skipif(
    _java() is None, reason="Java is not installed: Spark needs Java 17+ (JAVA_HOME or PATH)"
)

REQUESTS = [
    {"request": "r1", "by": "ana", "at": "2026-12-01", "ids": [2, "5"]},
    {"request": "r2", "by": "bo", "at": "2026-12-02", "where": 'body contains "secret"'},
    {"request": "r3", "by": "cy", "at": "2026-12-03", "where": "n > 7 and not (n == 9)"},
]


def test_spark_forgets_the_same_rows_as_duckdb(tmp_path: Path) -> None:
    rows = [[i, f"row {i}" + (" secret" if i in (1, 4) else ""), i] for i in range(12)]
    write_csv(tmp_path / "d.csv", ["id", "body", "n"], rows)
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    spec = tmp_path / "d.fm"
    spec.write_text(
        "dataset d {\n"
        '  source csv("d.csv")\n'
        '  forget "forget.jsonl"\n'
        "  schema { id: int @id; body: text; n: int }\n"
        "  clean { dedupe body }\n"
        "  split { train 50%, test 50% by hash(id) }\n"
        f"{GRANT}}}\n",
        encoding="utf-8",
    )
    got = {}
    for engine in ("duckdb", "spark"):
        build = tmp_path / engine
        run_engine(spec, build, engine)
        report = json.loads((build / "run/data/d/report.json").read_text())
        outputs = {
            split: pq.read_table(build / f"run/data/d/{split}.parquet").to_pylist()
            for split in ("all", "train", "test")
        }
        entries = [json.loads(line) for line in (build / "audit.log").read_text().splitlines()]
        audited = [(e["request"], e["rows_removed"]) for e in entries if e["action"] == "forget"]
        got[engine] = (outputs, report["forget"]["removed"], audited)
    assert got["spark"] == got["duckdb"]
    outputs, removed, audited = got["duckdb"]
    assert [r["id"] for r in outputs["all"]] == [0, 3, 6, 7, 9]
    assert removed == {"r1": 2, "r2": 2, "r3": 3}
    assert audited == [("r1", 2), ("r2", 2), ("r3", 3)]
