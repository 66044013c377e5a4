"""`fmc run --engine spark` equals the DuckDB engine row for row: every dataset of every
example and the datasets the data tests use, run by both engines from the same build folder
contents, compared file by file (every Parquet output: column names and types, every value
in order, NULLs included; the rule reports' rows in and out; the label analysis).

One Spark session for the module (starting one takes 10-20 s). Skipped, with the reason,
only where Java is missing; pyspark itself is a dev dependency and must be installed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmlang.api import build as build_artifacts
from fmlang.api import check_paths, compile_spec
from fmlang.backends.data.spark import _java
from fmlang.backends.run import RunOptions, run
from fmlang.errors import StageError
from tests.data_helpers import GRANT, TESTER, write_csv

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    _java() is None, reason="Java is not installed: Spark needs Java 17+ (JAVA_HOME or PATH)"
)

# Each example file with the principal its datasets grant `read` (and `label`) to; together
# they cover every dataset the examples declare (checked below).
EXAMPLES = [
    ("youtube_spam/spam.fm", "team:trust-safety"),
    ("support_assistant/assistant.fm", "team:support-ml"),
    ("adapter_merge/team_a.fm", "team:billing"),
    ("adapter_merge/team_b.fm", "team:shipping"),
]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fmlang.backends.data.spark import spark_session, stop_session

    log = tmp_path_factory.mktemp("spark") / "spark.log"
    session = spark_session(log, cores=2)
    yield session
    stop_session()


def run_engine(spec: Path, build: Path, engine: str, principal: str = TESTER) -> None:
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    build_artifacts(result, build, only_if_stale=True)
    options = RunOptions(build, spec, "labels", principal, log=lambda _: None, engine=engine)
    run(compile_spec(result), options, spec.read_text(encoding="utf-8"))


def both(spec: Path, tmp: Path, principal: str = TESTER) -> tuple[Path, Path]:
    """Build once, then run the same build folder's SQL in each engine."""
    duck, spark = tmp / "duckdb", tmp / "spark"
    run_engine(spec, duck, "duckdb", principal)
    shutil.copytree(duck, spark, ignore=shutil.ignore_patterns("run", "run.lock", "audit.log*"))
    run_engine(spec, spark, "spark", principal)
    return duck, spark


def _schema(table: pa.Table) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in table.schema]


def assert_same_outputs(duck: Path, spark: Path) -> int:
    """Every output of the DuckDB run has its equal in the Spark run; the files compared."""
    outputs = sorted(p.relative_to(duck) for p in (duck / "run").rglob("*") if p.is_file())
    compared = 0
    for relative in outputs:
        if relative.suffix == ".parquet":
            want, got = pq.read_table(duck / relative), pq.read_table(spark / relative)
            assert _schema(got) == _schema(want), relative
            assert got.to_pylist() == want.to_pylist(), relative  # in order: by fm_row
        elif relative.name == "report.json" and relative.parent.parent.name == "data":
            want_report = json.loads((duck / relative).read_text())
            got_report = json.loads((spark / relative).read_text())
            assert got_report["rules"] == want_report["rules"], relative
            assert got_report["splits"] == want_report["splits"], relative
        elif relative.name.endswith((".analysis.json", ".model.json")):
            want_doc = json.loads((duck / relative).read_text())
            assert json.loads((spark / relative).read_text()) == want_doc, relative
        else:
            continue
        compared += 1
    return compared


@pytest.mark.parametrize(("example", "principal"), EXAMPLES, ids=[e for e, _ in EXAMPLES])
def test_examples_equal_in_both_engines(spark: Any, tmp_path: Path, example: str,
                                        principal: str) -> None:  # fmt: skip
    folder = tmp_path / "example"
    shutil.copytree((ROOT / "examples" / example).parent, folder)
    duck, spark_build = both(folder / Path(example).name, tmp_path, principal)
    assert assert_same_outputs(duck, spark_build) >= 3


def test_the_examples_list_covers_every_example_dataset() -> None:
    declared = set()
    for path in sorted(ROOT.glob("examples/*/*.fm")):
        result = check_paths([path], verify=False)
        declared |= {(d.name, d.file) for d in compile_spec(result).datasets if d.source}
    covered = set()
    for example, _ in EXAMPLES:
        result = check_paths([ROOT / "examples" / example], verify=False)
        covered |= {(d.name, d.file) for d in compile_spec(result).datasets if d.source}
    assert declared and declared == covered


def _dataset(name: str, source: str, schema: str, clean: str = "", extra: str = "") -> str:
    body = f"  clean {{\n{clean}\n  }}\n" if clean else ""
    return (f'dataset {name} {{\n  source {source}\n  schema {{\n{schema}\n  }}\n{body}{extra}'
            f"{GRANT}}}\n")  # fmt: skip


ID_BODY = "    id: string @id\n    body: text"
SPLIT = "  split { train 80%, valid 10%, test 10% by hash(id) }\n"
NEAR_BASE = "check out my new music video on my channel please subscribe"


def _zoo(folder: Path) -> Path:
    """The data tests' datasets (tests/test_data_pipeline.py, test_data_stages.py), and a few
    more cases, in one spec so that one run covers them all."""
    norm = ["  Ｈｅｌｌｏ   World ", "<b>Café</b> crème", "A\tB\n C", "ǅemal İstanbul ﬁ", ""]
    write_csv(folder / "norm.csv", ["id", "body"], [[i, v] for i, v in enumerate(norm)])
    exact = ["a", "b", "a", "c", "b", None, None]
    write_csv(folder / "exact.csv", ["id", "body"], [[i, v] for i, v in enumerate(exact)])
    near = [NEAR_BASE, NEAR_BASE + "!!", NEAR_BASE.replace("music", "muzic"),
            "this song reminds me of summer with my friends at the lake",
            "completely different words about cooking pasta tonight", "", "tiny"]  # fmt: skip
    near += [f"comment {i % 37} about video {i % 11} and song {i % 5}" for i in range(300)]
    write_csv(folder / "near.csv", ["id", "body"], [[i, v] for i, v in enumerate(near)])
    filt = ["short", "a much longer comment", ""]
    write_csv(folder / "filt.csv", ["id", "body"], [[i, v] for i, v in enumerate(filt)])
    pii = [
        "mail me at ana@example.com or +44 20 7946 0958",
        "card 4111 1111 1111 1111 and 1234 5678 9012 3456, ip 192.168.0.1",
        "see www.x.com/a. or https://y.io/z?q=1 (555) 123-4567",
        'quoted "text", with comma; and semicolon\nand a newline',
    ]
    write_csv(folder / "pii.csv", ["id", "body"], [[i, v] for i, v in enumerate(pii)])
    write_csv(folder / "split.csv", ["id", "body"], [[i, f"row {i}"] for i in range(2000)])
    write_csv(
        folder / "raw/Video-A.csv", ["ID", "TEXT", "CLASS"], [["x", "hi", "1"], ["z", "", "x"]]
    )
    write_csv(folder / "raw/Video-B.csv", ["ID", "TEXT", "CLASS"], [["y", "yo", "HAM"]])
    typed = [["1", "2.5", "true", "2024-01-31", "2024-01-31 12:30:00", "12"],
             ["x", "nan?", "no", "31/01/2024", "garbage", " 7 "],
             ["", "", "", "", "", ""]]  # fmt: skip
    write_csv(folder / "typed.csv", ["i", "f", "b", "d", "t", "n"], typed)
    lines = [{"t": {"id": "1", "q": "hello"}}, {"t": {"id": "2", "q": "bye"}}]
    (folder / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    flat = [{"id": "1", "q": "é", "n": 3}, {"id": "2", "q": None, "n": 4.5}]
    (folder / "flat.jsonl").write_text("\n".join(json.dumps(x) for x in flat) + "\n")
    pq.write_table(pa.table({"id": ["3"], "q": ["parquet row"]}), folder / "b.parquet")
    hf = folder / "hf/train"
    hf.mkdir(parents=True)
    table = pa.table({"id": ["a", "b"], "text": ["one", "two"]})
    with (
        pa.OSFile(str(hf / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    labelled = [
        ["1", "check http://x.io", "spam"],
        ["2", "please Subscribe to my channel now", "spam"],
        ["3", "nice song", "ham"],
        ["4", "love this song so much it is great", "ham"],
        ["5", "subscribe http://y.io", "spam"],
        ["6", "\tsong  with\ttabs ", "ham"],
    ]
    write_csv(folder / "c.csv", ["id", "text", "gold"], labelled)
    (folder / "mylfs.py").write_text(
        "def exclaims(row):\n    return 'spam' if 'http' in row['text'] else None\n"
    )
    ops = "nfkc, strip_html, strip_accents, collapse_whitespace, trim, lower"
    spec = "".join([
        _dataset("norm", 'csv("norm.csv")', ID_BODY, f"    normalize body: {ops}"),
        _dataset("exact", 'csv("exact.csv")', ID_BODY, "    dedupe body"),
        _dataset("near", 'csv("near.csv")', ID_BODY, "    dedupe body near 0.8"),
        _dataset("near2", 'csv("near.csv")', ID_BODY, "    dedupe id, body near 0.5"),
        _dataset("filt", 'csv("filt.csv")', ID_BODY, "    drop where length(body) < 6"),
        _dataset("keep", 'csv("filt.csv")', ID_BODY, '    keep where body contains "long"'),
        _dataset("pii", 'csv("pii.csv")', ID_BODY, "    redact pii in body\n    drop id"),
        _dataset("split", 'csv("split.csv")', ID_BODY, "    normalize body: trim", SPLIT),
        _dataset("rows", 'csv("near.csv")', ID_BODY + "\n    pos: int = row_number", "",
                 "  split { a 50%, b 50% by hash(pos) }\n"),
        _dataset("multi", 'csv("raw/*.csv", header = true)',
                 "    ID: string @id\n    TEXT: text\n"
                 "    CLASS: label[ham, spam] @gold { on_cast_error = null }\n"
                 "    video: category @protected = source_file\n    position: int = row_number\n"
                 "    loud: bool = TEXT ~ /^h/\n    size: int = length(TEXT) + words(TEXT)"),
        _dataset("typed", 'csv("typed.csv")',
                 "    i: int { on_cast_error = null }\n    f: float { on_cast_error = null }\n"
                 "    b: bool { on_cast_error = null }\n    d: date { on_cast_error = null }\n"
                 "    t: timestamp { on_cast_error = null }\n    n: string"),
        _dataset("typed_drop", 'csv("typed.csv")',
                 "    i: int { on_cast_error = drop }\n"
                 "    f: float { on_cast_error = null }\n    n: string"),
        _dataset("j", 'jsonl("a.jsonl", records = "t")', "    id: string @id\n    q: text"),
        _dataset("flat", 'jsonl("flat.jsonl")', "    id: string @id\n    q: text\n    n: float"),
        _dataset("p", 'parquet("b.parquet")', "    id: string @id\n    q: text"),
        _dataset("w", 'hf_disk("hf", split = "train")', "    id: string @id\n    text: text"),
        _dataset("c", 'csv("c.csv", header = true)',
                 "    id: string @id\n    text: text\n    gold: label[ham, spam] @gold",
                 "    normalize text: trim"),
        "labels l on c {\n  classes [ham, spam]\n"
        "  lf link:  text ~ /https?:/i -> spam\n"
        '  lf sub:   lower(text) contains "subscribe" -> spam\n'
        "  lf short: words(text) < 4 -> ham\n"
        '  lf song:  contains_any(lower(text), ["song", "great"]) and length(text) > 3 -> ham\n'
        '  lf py: python("mylfs:exclaims")\n'
        "  model majority(tie = abstain)\n" + GRANT + "}\n",
        "labels m on c {\n  classes [ham, spam]\n"
        "  lf link:  text ~ /https?:/i -> spam\n"
        "  lf short: words(text) < 4 -> ham\n"
        '  lf sub:   lower(text) contains "subscribe" -> spam\n'
        "  model label_model(epochs = 50)\n" + GRANT + "}\n",
    ])  # fmt: skip
    path = folder / "zoo.fm"
    path.write_text(spec, encoding="utf-8")
    return path


def test_data_test_datasets_equal_in_both_engines(spark: Any, tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    duck, spark_build = both(_zoo(folder), tmp_path)
    assert assert_same_outputs(duck, spark_build) >= 30


def test_spark_errors_are_diagnostics(spark: Any, tmp_path: Path) -> None:
    """A missing source and a missing column: the DuckDB engine's codes, at the same lines."""
    write_csv(tmp_path / "d.csv", ["id", "bodies"], [["1", "x"]])
    spec = tmp_path / "d.fm"
    spec.write_text(_dataset("d", 'csv("d.csv")', ID_BODY), encoding="utf-8")
    with pytest.raises(StageError) as caught:
        run_engine(spec, tmp_path / "b1", "spark")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0704" and diag.help and "bodies" in diag.help
    (tmp_path / "d.csv").unlink()
    with pytest.raises(StageError) as caught:
        run_engine(spec, tmp_path / "b2", "spark")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0701" and diag.primary_span and diag.primary_span.line == 2


def test_missing_java_or_pyspark_is_a_diagnostic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No traceback: FM0766 without Java, FM0765 (with the pip command) without pyspark."""
    import sys

    import fmlang.backends.data.spark as engine

    monkeypatch.setattr(engine, "_session", None)  # as in a fresh process
    monkeypatch.setattr(engine, "_java", lambda: None)
    with pytest.raises(StageError) as caught:
        engine.spark_session(tmp_path / "spark.log")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0766" and "Java" in diag.message
    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` raises ImportError
    with pytest.raises(StageError) as caught:
        engine.spark_session(tmp_path / "spark.log")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0765" and diag.help and "fmlang[spark]" in diag.help
