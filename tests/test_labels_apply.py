"""`apply_to`: a labels block's functions and fitted model label other splits and datasets
without refitting; checked (unknown split, own data, missing columns), lowered (one query per
target), run (one cached stage per target) and access-checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmlang.api import check_paths
from fmlang.backends.labelmodel.model import LabelModel
from fmlang.fmt import format_text
from fmlang.lower.artifacts import data_artifacts
from tests.data_helpers import GRANT, compile_file, rows, run_spec, write_csv

SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
    gold: label[ham, spam] @gold
  }
  split { train 60%, valid 20%, test 20% by hash(id) }
GRANT}

dataset other {
  source csv("o.csv", header = true)
  schema {
    key: string @id
    text: text
  }
GRANT}

labels l on c.train {
  classes [ham, spam]
  lf link:  text ~ /https?:/i -> spam
  lf sub:   lower(text) contains "subscribe" -> spam
  lf short: words(text) < 4 -> ham
  lf song:  lower(text) contains "song" -> ham
  APPLY
GRANT}
""".replace("GRANT", GRANT)

TEXTS = [
    ("please check http://x.io now", "spam"),
    ("please subscribe to my channel", "spam"),
    ("nice song", "ham"),
    ("love this song so much", "ham"),
    ("subscribe to http://y.io today", "spam"),
    ("great", "ham"),
]


def project(tmp_path: Path, apply: str = "apply_to [c.valid, c.test, other]") -> Path:
    data = [[str(i), TEXTS[i % 6][0] + f" {i}" * (i % 3), TEXTS[i % 6][1]] for i in range(120)]
    write_csv(tmp_path / "c.csv", ["id", "text", "gold"], data)
    write_csv(
        tmp_path / "o.csv", ["key", "text"], [["a", "subscribe to http://z.io now"], ["b", "ok"]]
    )
    spec = tmp_path / "s.fm"
    spec.write_text(SPEC.replace("APPLY", apply), encoding="utf-8")
    return spec


def diagnostics(spec: Path, verify: bool = False) -> list[tuple[str, str]]:
    result = check_paths([spec], verify=verify)
    return [(d.code, d.message) for d in result.diagnostics]


def assert_fitted_model_labels(build: Path, got: list[dict[str, object]]) -> None:
    """The rows' labels are the stored model's predictions on their votes (not a refit)."""
    model = LabelModel.load(build / "run/labels/l.model.json")
    matrix = np.array([[r[f"lf_{n}"] for n in ("link", "sub", "short", "song")] for r in got])
    expected = model.label(matrix)
    assert [r["fm_label"] for r in got] == [("ham", "spam")[i] if i >= 0 else None
                                           for i in expected]  # fmt: skip
    assert np.allclose([r["fm_probs"] for r in got], model.predict_proba(matrix))


def test_applied_splits_are_labelled_with_the_fitted_model(tmp_path: Path) -> None:
    spec = project(tmp_path)
    build = tmp_path / "b"
    report = run_spec(spec, build)
    stages = [o.stage for o in report.outcomes]
    assert stages == ["data:c", "data:other", "labels:l", "labels:l@c.valid",
                      "labels:l@c.test", "labels:l@other.all"]  # fmt: skip
    for split in ("valid", "test"):
        got = rows(build / f"run/labels/l/c/{split}.parquet")
        source = rows(build / f"run/data/c/{split}.parquet")
        assert got and [r["id"] for r in got] == [r["id"] for r in source]
        assert_fitted_model_labels(build, got)
        analysis = json.loads((build / f"run/labels/l/c/{split}.analysis.json").read_text())
        assert analysis["applied_to"] == {"dataset": "c", "split": split}
        assert analysis["label_model"]["rows"] == len(got)
        assert 0.0 <= analysis["label_model"]["accuracy_all"] <= 1.0  # c has @gold
    other = rows(build / "run/labels/l/other/all.parquet")
    assert [(r["key"], r["lf_link"], r["lf_short"]) for r in other] == [("a", 1, -1), ("b", -1, 0)]
    assert_fitted_model_labels(build, other)
    assert (
        "accuracy_all"
        not in json.loads((build / "run/labels/l/other/all.analysis.json").read_text())[
            "label_model"
        ]
    )  # no gold column there


def test_applied_stages_are_cached_and_follow_the_fit(tmp_path: Path) -> None:
    spec = project(tmp_path, "apply_to [c.test]")
    build = tmp_path / "b"
    run_spec(spec, build)
    again = run_spec(spec, build)
    assert all(o.skipped for o in again.outcomes)
    # A new function changes the fit: the labels and the applied split rerun, not the data.
    text = spec.read_text().replace("  apply_to", '  lf now: lower(text) contains "now" -> spam\n'
                                    "  apply_to")  # fmt: skip
    spec.write_text(text)
    third = run_spec(spec, build)
    assert [(o.stage, o.skipped) for o in third.outcomes] == [
        ("data:c", True), ("data:other", True), ("labels:l", False), ("labels:l@c.test", False)
    ]  # fmt: skip
    assert "lf_now" in rows(build / "run/labels/l/c/test.parquet")[0]


def test_one_query_per_applied_target_reading_its_split(tmp_path: Path) -> None:
    files = data_artifacts(compile_file(project(tmp_path)))
    assert "run/data/c/valid.parquet" in files["labels/l/c/valid.duckdb.sql"]
    assert "run/data/c/test.parquet" in files["labels/l/c/test.spark.sql"]
    assert "run/data/other/all.parquet" in files["labels/l/other/all.duckdb.sql"]
    assert "run/data/c/train.parquet" in files["labels/l.duckdb.sql"]


@pytest.mark.parametrize(
    ("apply", "code", "words"),
    [
        ("apply_to [c.tset]", "FM0404", "no split `tset`"),
        ("apply_to [c.train]", "FM0396", "fitted on `c.train` already"),
        ("apply_to [c.test, c.test]", "FM0396", "listed twice"),
        ("apply_to [nowhere.test]", "FM0401", "nowhere"),
        ("apply_to [c.test.x]", "FM0302", ""),
    ],
)
def test_bad_targets_are_refused(tmp_path: Path, apply: str, code: str, words: str) -> None:
    found = diagnostics(project(tmp_path, apply))
    assert any(c == code and words in m for c, m in found), found


def test_a_target_without_the_functions_columns_is_refused(tmp_path: Path) -> None:
    spec = project(tmp_path)
    text = spec.read_text()
    other = text.index("dataset other")
    text = text[:other] + text[other:].replace("    text: text", "    body: text", 1)
    spec.write_text(text)
    found = diagnostics(spec)
    missing = [m for c, m in found if c == "FM0397"]
    assert missing and all("dataset `other` has no column `text`" in m for m in missing), found
    assert {m.split("function `")[1].split("`")[0] for m in missing} == {
        "link",
        "sub",
        "short",
        "song",
    }


def test_a_target_dataset_needs_a_label_grant(tmp_path: Path) -> None:
    spec = project(tmp_path)
    text = spec.read_text()
    other = text.index("dataset other")
    text = text[:other] + text[other:].replace(GRANT, '  grant read to "team:ml"\n', 1)
    spec.write_text(text)
    found = diagnostics(spec, verify=True)
    assert any(c in ("FM0611", "FM0604") and "other" in m for c, m in found), found


# ---- splits that follow files ----------------------------------------------------------

FILES_SPEC = """\
dataset w {
  source csv("wrench/*.csv", header = true)
  schema {
    id: string @id
    text: text
    gold: label[ham, spam] @gold
  }
  SPLIT
GRANT}

labels l on w.train {
  classes [ham, spam]
  lf link: text ~ /https?:/i -> spam
  lf song: lower(text) contains "song" -> ham
  apply_to [w.valid, w.test]
GRANT}
""".replace("GRANT", GRANT)
FILES_SPLIT = 'split { train "train.csv", valid "valid.csv", test "te?t.csv" }'


def files_project(tmp_path: Path, split: str = FILES_SPLIT) -> Path:
    sizes = {"train": 30, "valid": 7, "test": 11}
    for name, size in sizes.items():
        data = [[f"{name}{i}", ("see http://x.io", "nice song")[i % 2], ("spam", "ham")[i % 2]]
                for i in range(size)]  # fmt: skip
        write_csv(tmp_path / "wrench" / f"{name}.csv", ["id", "text", "gold"], data)
    spec = tmp_path / "w.fm"
    spec.write_text(FILES_SPEC.replace("SPLIT", split), encoding="utf-8")
    return spec


def test_a_split_can_follow_the_source_files(tmp_path: Path) -> None:
    spec = files_project(tmp_path)
    build = tmp_path / "b"
    run_spec(spec, build)
    for split, size in (("train", 30), ("valid", 7), ("test", 11)):
        got = rows(build / f"run/data/w/{split}.parquet")
        assert [r["id"] for r in got] == [f"{split}{i}" for i in range(size)]
    assert len(rows(build / "run/labels/l/w/test.parquet")) == 11
    formatted = format_text(spec.read_text(encoding="utf-8")).text
    assert formatted is not None and f"  {FILES_SPLIT}\n" in formatted  # kept as written


@pytest.mark.parametrize(
    ("split", "code", "words"),
    [
        ('split { train "train.csv", valid "valid.csv", test "tset.csv" }', "FM0398",
         "`tset.csv`, which none"),
        ('split { train "train.csv", valid 20%, test "test.csv" }', "FM0399", "not both"),
        ('split { train "train.csv", valid "valid.csv", test "test.csv" by hash(id) }',
         "FM0399", "takes no `by`"),
        ('split { train "wrench/train.csv", valid "valid.csv", test "test.csv" }', "FM0399",
         "not a file name pattern"),
        ('split { train "train.csv", valid "valid.csv", test "valid.csv" }', "FM0406",
         "`test.csv` belong to no split"),
    ],
)  # fmt: skip
def test_bad_file_splits_are_reported(tmp_path: Path, split: str, code: str, words: str) -> None:
    result = check_paths([files_project(tmp_path, split)], data=True)
    found = [(d.code, d.message) for d in result.diagnostics]
    assert any(c == code and words in m for c, m in found), found
