"""`batch = auto` weighs optimizer steps, not only memory: the solver picks the largest batch
that fits and still leaves `min_steps` steps on the rows the training data is estimated to
hold (`fmlang/verify/rows.py`), and the row estimate reads CSV, JSON Lines, JSON and
Parquet sources without running the data stage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmlang.api import check_paths, compile_spec
from fmlang.ir.nodes import DataRef, Spec
from fmlang.verify import rows
from fmlang.verify.rows import source_rows, training_rows

SPEC = """
import std.models.minilm_l6
import std.hardware.cpu_2core

dataset notes {{
  source csv("notes.csv", header = true)
  schema {{
    id:    string @id
    body:  text
    label: label[no, yes] @gold
  }}
  split {{ train 80%, test 20% by hash(id) }}
  grant read, label, train to "team:ml"
}}

labels lab on notes.train {{
  classes [no, yes]
  lf one: body contains "1" -> yes
  lf two: body contains "2" -> no
  grant label, train to "team:ml"
}}

model m {{
  base    minilm_l6
  task    classify(lab)
  adapter lora(rank = 8, alpha = 16, targets = [query, value])
  max_seq 64
  train {{
    data   = lab
    input  = body
    {train}
  }}
}}

constraints m {{
  memory <= 16GiB on cpu_2core
}}
"""


def write_csv(folder: Path, n: int) -> None:
    lines = ["id,body,label"] + [
        f"r{i},some words number {i},{'yes' if i % 3 else 'no'}" for i in range(n)
    ]
    (folder / "notes.csv").write_text("\n".join(lines) + "\n")


def chosen(folder: Path, train: str) -> tuple[int, dict[str, object]]:
    spec = folder / "spec.fm"
    spec.write_text(SPEC.format(train=train))
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.report is not None
    document = result.report.to_json()
    knobs = document["knobs"]
    memory = next(s["memory"] for s in document["stages"] if "memory" in s)
    return int(knobs["m.train.batch"]), memory


@pytest.mark.parametrize(
    ("n", "epochs", "expected"),
    [
        (1000, 3, 8),  # 800 train rows: 16 leaves 150 steps, 8 leaves 300
        (4000, 3, 32),  # 3,200 rows: 32 leaves 300 steps, 64 only 150
        (100_000, 1, 256),  # 80,000 rows: even the largest batch offered leaves 313 steps
    ],
)
def test_auto_batch_leaves_the_minimum_steps(
    tmp_path: Path, n: int, epochs: int, expected: int
) -> None:
    write_csv(tmp_path, n)
    batch, memory = chosen(
        tmp_path, f"epochs = {epochs}\n    batch = auto in [4, 8, 16, 32, 64, 128, 256]"
    )
    assert batch == expected
    assert memory["min_steps"] == 200
    assert memory["optimizer_steps"] >= 200


def test_min_steps_is_the_users_to_set(tmp_path: Path) -> None:
    write_csv(tmp_path, 1000)
    batch, memory = chosen(
        tmp_path, "epochs = 3\n    min_steps = 50\n    batch = auto in [4, 8, 16, 32, 64]"
    )
    assert batch == 32  # 800 rows x 3 epochs / 32 = 75 steps >= 50; 64 leaves 39
    assert memory["optimizer_steps"] == 75


def test_too_small_for_any_batch_picks_the_most_steps(tmp_path: Path) -> None:
    write_csv(tmp_path, 40)
    batch, _ = chosen(tmp_path, "epochs = 1\n    batch = auto in [4, 8, 16]")
    assert batch == 4


def test_max_steps_fixes_the_step_count_so_memory_decides(tmp_path: Path) -> None:
    write_csv(tmp_path, 1000)
    batch, memory = chosen(tmp_path, "max_steps = 100\n    batch = auto in [4, 8, 16, 32, 64]")
    assert batch == 64
    assert "optimizer_steps" not in memory


def test_unknown_row_count_falls_back_to_the_largest_that_fits(tmp_path: Path) -> None:
    write_csv(tmp_path, 1000)
    spec_text = SPEC.format(train="epochs = 3\n    batch = auto in [4, 8, 16, 32, 64]")
    spec = tmp_path / "spec.fm"
    spec.write_text(spec_text.replace('csv("notes.csv"', 'csv("none-*.csv"'))
    result = check_paths([spec], verify=True)
    assert result.report is not None
    assert result.report.to_json()["knobs"]["m.train.batch"] == 64


# ---- the row estimate ----------------------------------------------------------------


def dataset_of(folder: Path, source: str) -> Spec:
    (folder / "spec.fm").write_text(
        f"dataset d {{\n  source {source}\n  schema {{ id: string @id }}\n"
        '  split { train 50%, test 50% by hash(id) }\n  grant read to "team:ml"\n}\n'
    )
    result = check_paths([folder / "spec.fm"])
    assert result.ok, [d.message for d in result.diagnostics]
    return compile_spec(result)


def test_csv_records_are_counted_not_lines(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('id,text\n1,"two\nlines"\n2,plain\n3,"a ""quote"""\n')
    spec = dataset_of(tmp_path, 'csv("d.csv", header = true)')
    assert source_rows(spec.datasets[0], tmp_path) == (3, True)


def test_jsonl_json_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": "a"}\n\n{"id": "b"}\n')
    spec = dataset_of(tmp_path, 'jsonl("d.jsonl")')
    assert source_rows(spec.datasets[0], tmp_path) == (2, True)

    keyed = {str(i): {"data": {"text": "x"}, "label": 0} for i in range(7)}
    (tmp_path / "d.json").write_text(json.dumps(keyed))
    spec = dataset_of(tmp_path, 'json("d.json")')
    assert source_rows(spec.datasets[0], tmp_path) == (7, True)

    pq.write_table(pa.table({"id": [str(i) for i in range(11)]}), tmp_path / "d.parquet")
    spec = dataset_of(tmp_path, 'parquet("d.parquet")')
    assert source_rows(spec.datasets[0], tmp_path) == (11, True)
    estimate = training_rows(spec, DataRef(dataset="d", split="train"), tmp_path)
    assert estimate is not None and (estimate.rows, estimate.share) == (6, 0.5)


def test_large_files_are_extrapolated_from_a_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "EXACT_BYTES", 1000)
    monkeypatch.setattr(rows, "SAMPLE_BYTES", 500)
    (tmp_path / "d.jsonl").write_text("".join(f'{{"id": "{i:04d}"}}\n' for i in range(400)))
    spec = dataset_of(tmp_path, 'jsonl("d.jsonl")')
    counted = source_rows(spec.datasets[0], tmp_path)
    assert counted is not None
    total, exact = counted
    assert not exact and abs(total - 400) <= 8


def test_an_unreadable_source_gives_no_estimate(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text("{not json")
    spec = dataset_of(tmp_path, 'json("d.json")')
    assert source_rows(spec.datasets[0], tmp_path) is None
