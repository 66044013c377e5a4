"""The data stage end to end in DuckDB: every cleaning rule, splits, derived columns, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlang.errors import StageError
from tests.data_helpers import GRANT, one_column_dataset, rows, run_spec, write_csv


def bodies(tmp_path: Path, values: list[str], clean: str) -> list[str | None]:
    spec = one_column_dataset(tmp_path, values, clean)
    run_spec(spec, tmp_path / "build", until="data")
    return [r["body"] for r in rows(tmp_path / "build/run/data/d/all.parquet")]


def test_normalize_operations(tmp_path: Path) -> None:
    values = ["  Ｈｅｌｌｏ   World ", "<b>Café</b> crème", "A\tB\n C"]
    got = bodies(tmp_path, values, "    normalize body: nfkc, strip_html, strip_accents, "
                 "collapse_whitespace, trim, lower")  # fmt: skip
    assert got == ["hello world", "cafe creme", "a b c"]


def test_exact_dedupe_keeps_the_first_row(tmp_path: Path) -> None:
    spec = one_column_dataset(tmp_path, ["a", "b", "a", "c", "b"], "    dedupe body")
    run_spec(spec, tmp_path / "build", until="data")
    kept = rows(tmp_path / "build/run/data/d/all.parquet")
    assert [(r["id"], r["body"]) for r in kept] == [("0", "a"), ("1", "b"), ("3", "c")]


def test_near_dedupe_drops_only_similar_rows(tmp_path: Path) -> None:
    base = "check out my new music video on my channel please subscribe"
    values = [
        base,
        base + "!!",  # near-identical: dropped
        base.replace("music", "muzic"),  # one character changed: dropped
        "this song reminds me of summer with my friends at the lake",
        "completely different words about cooking pasta tonight",
    ]
    got = bodies(tmp_path, values, "    dedupe body near 0.8")
    assert got == [values[0], values[3], values[4]]


def test_filters_treat_null_as_false(tmp_path: Path) -> None:
    values = ["short", "a much longer comment", ""]
    assert bodies(tmp_path, values, "    drop where length(body) < 6") == [
        "a much longer comment",
        None,  # an empty CSV field is NULL: the condition is unknown, so the row stays
    ]
    assert bodies(tmp_path / "k", values, '    keep where body contains "long"') == [
        "a much longer comment"
    ]


def test_drop_columns_and_redaction(tmp_path: Path) -> None:
    spec = one_column_dataset(tmp_path, ["mail me at ana@example.com or +44 20 7946 0958"],
                              "    redact email, phone in body\n    drop id")  # fmt: skip
    run_spec(spec, tmp_path / "build", until="data")
    (row,) = rows(tmp_path / "build/run/data/d/all.parquet")
    assert row == {"body": "mail me at [EMAIL] or [PHONE]"}


def test_report_counts_rows_per_rule(tmp_path: Path) -> None:
    import json

    spec = one_column_dataset(tmp_path, ["a", "a", "bb", "ccc"],
                              "    dedupe body\n    drop where length(body) < 2")  # fmt: skip
    run_spec(spec, tmp_path / "build", until="data")
    report = json.loads((tmp_path / "build/run/data/d/report.json").read_text())
    removed = {r["rule"]: r["removed"] for r in report["rules"]}
    assert removed["dedupe body"] == 1 and removed["drop where length(body) < 2"] == 1
    assert [r["rows_out"] for r in report["rules"]][-1] == 2


SPLIT = "  split { train 80%, valid 10%, test 10% by hash(id) }\n"


def test_splits_are_deterministic_disjoint_and_proportional(tmp_path: Path) -> None:
    values = [f"row {i}" for i in range(2000)]
    spec = one_column_dataset(tmp_path, values, "    normalize body: trim", SPLIT)
    sizes = []
    for build in ("b1", "b2"):
        run_spec(spec, tmp_path / build, until="data")
        parts = {s: [r["id"] for r in rows(tmp_path / build / f"run/data/d/{s}.parquet")]
                 for s in ("train", "valid", "test")}  # fmt: skip
        sizes.append({s: len(ids) for s, ids in parts.items()})
        assert sum(sizes[-1].values()) == 2000
        assert not set(parts["train"]) & set(parts["test"])
    assert sizes[0] == sizes[1]
    assert 0.77 < sizes[0]["train"] / 2000 < 0.83 and 0.08 < sizes[0]["test"] / 2000 < 0.12


def test_split_membership_does_not_depend_on_other_rows(tmp_path: Path) -> None:
    """A row's split is a function of its key: adding rows never moves existing ones."""
    first = one_column_dataset(
        tmp_path / "a", [f"r{i}" for i in range(300)], "    normalize body: trim", SPLIT
    )
    trim = "    normalize body: trim"
    second = one_column_dataset(tmp_path / "b", [f"r{i}" for i in range(600)], trim, SPLIT)
    run_spec(first, tmp_path / "a/build", until="data")
    run_spec(second, tmp_path / "b/build", until="data")
    small = {r["id"] for r in rows(tmp_path / "a/build/run/data/d/test.parquet")}
    large = {r["id"] for r in rows(tmp_path / "b/build/run/data/d/test.parquet")}
    assert small <= large and small


def test_derived_columns_and_label_casts(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw/Video-A.csv", ["ID", "TEXT", "CLASS"], [["x", "hi", "1"]])
    write_csv(tmp_path / "raw/Video-B.csv", ["ID", "TEXT", "CLASS"], [["y", "yo", "HAM"]])
    spec = tmp_path / "s.fm"
    spec.write_text(
        'dataset s {\n  source csv("raw/*.csv", header = true)\n' + GRANT + "  schema {\n"
        "    ID: string @id\n    TEXT: text\n    CLASS: label[ham, spam] @gold\n"
        "    video: category @protected = source_file\n    position: int = row_number\n"
        "    loud: bool = TEXT ~ /^h/\n  }\n}\n",
        encoding="utf-8",
    )
    run_spec(spec, tmp_path / "build", until="data")
    got = rows(tmp_path / "build/run/data/s/all.parquet")
    assert got == [
        {"ID": "x", "TEXT": "hi", "CLASS": "spam", "video": "Video-A", "position": 1, "loud": True},
        {"ID": "y", "TEXT": "yo", "CLASS": "ham", "video": "Video-B", "position": 2, "loud": False},
    ]


def test_missing_source_is_an_io_error_at_the_source_line(tmp_path: Path) -> None:
    spec = one_column_dataset(tmp_path, ["a"], "    normalize body: trim")
    (tmp_path / "d.csv").unlink()
    with pytest.raises(StageError) as caught:
        run_spec(spec, tmp_path / "build", until="data")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0701" and diag.primary_span and diag.primary_span.line == 2


def test_missing_column_names_the_schema_line(tmp_path: Path) -> None:
    write_csv(tmp_path / "d.csv", ["id", "bodies"], [["1", "x"]])
    spec = tmp_path / "d.fm"
    spec.write_text('dataset d {\n  source csv("d.csv")\n'
        + GRANT
        + '  schema {\n    id: string @id\n'
                    "    body: text\n  }\n}\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(StageError) as caught:
        run_spec(spec, tmp_path / "build", until="data")
    (diag,) = caught.value.diagnostics
    assert diag.code == "FM0704" and diag.primary_span and diag.primary_span.line == 6
    assert diag.help and "bodies" in diag.help


def test_jsonl_and_parquet_sources(tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [{"t": {"id": "1", "q": "hello"}}, {"t": {"id": "2", "q": "bye"}}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    pq.write_table(pa.table({"id": ["3"], "q": ["parquet row"]}), tmp_path / "b.parquet")
    spec = tmp_path / "s.fm"
    spec.write_text(
        'dataset j {\n  source jsonl("a.jsonl", records = "t")\n' + GRANT + ""
        "  schema {\n    id: string @id\n    q: text\n  }\n}\n"
        'dataset p {\n  source parquet("b.parquet")\n' + GRANT + ""
        "  schema {\n    id: string @id\n    q: text\n  }\n}\n",
        encoding="utf-8",
    )
    run_spec(spec, tmp_path / "build", until="data")
    assert [r["q"] for r in rows(tmp_path / "build/run/data/j/all.parquet")] == ["hello", "bye"]
    assert rows(tmp_path / "build/run/data/p/all.parquet") == [{"id": "3", "q": "parquet row"}]


def test_hf_disk_source(tmp_path: Path) -> None:
    """The layout `datasets.save_to_disk` writes: Arrow IPC streams in the split's folder."""
    import pyarrow as pa

    folder = tmp_path / "hf/train"
    folder.mkdir(parents=True)
    table = pa.table({"id": ["a", "b"], "text": ["one", "two"]})
    arrow = str(folder / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    spec = tmp_path / "s.fm"
    spec.write_text('dataset w {\n  source hf_disk("hf", split = "train")\n'
        + GRANT
        + ''
                    "  schema {\n    id: string @id\n    text: text\n  }\n}\n")  # fmt: skip
    run_spec(spec, tmp_path / "build", until="data")
    assert rows(tmp_path / "build/run/data/w/all.parquet") == [
        {"id": "a", "text": "one"},
        {"id": "b", "text": "two"},
    ]
