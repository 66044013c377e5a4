"""The labels stage, the stage cache, access checks, and the emitted SQL (the audit log's own
tests are in test_audit.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlglot

from fmlang.backends.data.audit_verify import verify_log
from fmlang.errors import StageError
from fmlang.lower.artifacts import data_artifacts
from tests.data_helpers import compile_file, rows, run_spec, write_csv

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/*.fm"))

SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
    gold: label[ham, spam] @gold
  }
  clean {
    normalize text: trim
  }
  grant read, label to "team:a"
}

labels l on c {
  classes [ham, spam]
  lf link:  text ~ /https?:/i -> spam
  lf sub:   lower(text) contains "subscribe" -> spam
  lf short: words(text) < 4 -> ham
  LF_EXTRA
  model majority(tie = abstain)
}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    data = [
        ["1", "check http://x.io", "spam"],
        ["2", "please Subscribe to my channel now", "spam"],
        ["3", "nice song", "ham"],
        ["4", "love this song so much it is great", "ham"],
        ["5", "subscribe http://y.io", "spam"],
    ]
    write_csv(tmp_path / "c.csv", ["id", "text", "gold"], data)
    spec = tmp_path / "s.fm"
    spec.write_text(SPEC.replace("  LF_EXTRA\n", ""), encoding="utf-8")
    return spec


def test_label_matrix_and_labels(project: Path) -> None:
    run_spec(project, project.parent / "b", principal="team:a")
    got = rows(project.parent / "b/run/labels/l.parquet")
    votes = [(r["lf_link"], r["lf_sub"], r["lf_short"]) for r in got]
    assert votes == [(1, -1, 0), (-1, 1, -1), (-1, -1, 0), (-1, -1, -1), (1, 1, 0)]
    # Majority with ties abstaining: row 1 ties (spam, ham), row 4 has no votes.
    assert [r["fm_label"] for r in got] == [None, "spam", "ham", None, "spam"]
    analysis = json.loads((project.parent / "b/run/labels/l.analysis.json").read_text())
    lfs = {lf["name"]: lf for lf in analysis["analysis"]["lfs"]}
    assert lfs["link"]["coverage"] == pytest.approx(0.4)
    assert lfs["short"]["accuracy"] == pytest.approx(1 / 3)  # right on row 3, wrong on 1 and 5


def test_unchanged_stages_are_skipped_and_changes_rerun_only_downstream(project: Path) -> None:
    build = project.parent / "b"
    first = run_spec(project, build, principal="team:a")
    assert [o.skipped for o in first.outcomes] == [False, False]
    again = run_spec(project, build, principal="team:a")
    assert [o.skipped for o in again.outcomes] == [True, True]
    # A new labeling function: the data stage is reused, only the labels rerun.
    text = SPEC.replace("  LF_EXTRA\n", '  lf song: text contains "song" -> ham\n')
    project.write_text(text, encoding="utf-8")
    changed = run_spec(project, build, principal="team:a")
    assert [o.skipped for o in changed.outcomes] == [True, False]
    # A changed cleaning rule reruns the data stage and, through its key, the labels.
    project.write_text(text.replace("normalize text: trim", "normalize text: lower"))
    assert [o.skipped for o in run_spec(project, build, principal="team:a").outcomes] == [
        False,
        False,
    ]
    # Changed data reruns too; deleting an output reruns the stage that makes it.
    with (project.parent / "c.csv").open("a") as handle:
        handle.write("6,subscribe,spam\r\n")
    assert not run_spec(project, build, principal="team:a").outcomes[0].skipped
    (build / "run/labels/l.parquet").unlink()
    assert [o.skipped for o in run_spec(project, build, principal="team:a").outcomes] == [
        True,
        False,
    ]


def test_access_is_refused_before_any_stage_and_audited(project: Path) -> None:
    build = project.parent / "b"
    with pytest.raises(StageError) as caught:
        run_spec(project, build, principal="team:b")
    assert [d.code for d in caught.value.diagnostics] == ["FM0702", "FM0702"]  # both stages
    with pytest.raises(StageError) as caught:
        run_spec(project, build, principal=None)
    assert [d.code for d in caught.value.diagnostics] == ["FM0703"]
    assert not (build / "run/data").exists(), "refused before any stage ran"
    run_spec(project, build, principal="team:a")
    # A cached stage checks access too: its outputs are the dataset's rows.
    with pytest.raises(StageError):
        run_spec(project, build, principal="team:b")
    entries = [json.loads(x) for x in (build / "audit.log").read_text().splitlines()]
    decisions = [(e["principal"], e["stage"], e["decision"], bool(e["files"])) for e in entries]
    assert decisions == [
        ("team:b", "data:c", "denied", False),  # the run's up-front check
        ("team:b", "labels:l", "denied", False),
        (None, "data:c", "denied", False),
        (None, "labels:l", "denied", False),
        ("team:a", "data:c", "allowed", False),
        ("team:a", "labels:l", "allowed", False),
        ("team:a", "data:c", "allowed", True),  # each stage as it reads its files
        ("team:a", "labels:l", "allowed", True),
        ("team:b", "data:c", "denied", False),
        ("team:b", "labels:l", "denied", False),
    ]
    assert verify_log(build / "audit.log").ok


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_emitted_sql_parses_in_its_dialect(example: Path) -> None:
    files = data_artifacts(compile_file(example))
    for name, text in files.items():
        dialect = "spark" if name.endswith(".spark.sql") else "duckdb"
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        for statement in filter(None, (s.strip() for s in _statements(body))):
            if statement.startswith("CREATE OR REPLACE TEMPORARY VIEW") and " USING " in statement:
                continue  # Spark's data-source DDL, outside sqlglot's grammar
            assert sqlglot.parse_one(statement, read=dialect) is not None, (name, statement)


def _statements(body: str) -> list[str]:
    """Split on `;` outside string literals."""
    return re.split(r";\s*(?=(?:[^']*'[^']*')*[^']*$)", body)


def test_youtube_example_runs_end_to_end(tmp_path: Path) -> None:
    example = ROOT / "examples/youtube_spam"
    build = tmp_path / "build"
    run_spec(example / "spam.fm", build, principal="team:trust-safety")
    report = json.loads((build / "run/data/comments/report.json").read_text())
    assert report["rules"][0]["rows_out"] == 1956  # the five CSV files
    assert sum(v for k, v in report["splits"].items() if k != "all") == report["splits"]["all"]
    analysis = json.loads((build / "run/labels/spam.analysis.json").read_text())
    assert len(analysis["analysis"]["lfs"]) == 15
    assert analysis["label_model"]["accuracy_covered"] > 0.85


def test_python_labeling_function(project: Path) -> None:
    (project.parent / "mylfs.py").write_text(
        "def exclaims(row):\n"
        "    return 'spam' if 'http' in row['text'] else None\n"
        "def broken(row):\n"
        "    return 'eggs'\n"
    )
    spec = SPEC.replace("  LF_EXTRA\n", '  lf py: python("mylfs:exclaims")\n')
    project.write_text(spec, encoding="utf-8")
    run_spec(project, project.parent / "b", principal="team:a")
    got = rows(project.parent / "b/run/labels/l.parquet")
    assert [r["lf_py"] for r in got] == [1, -1, -1, -1, 1]
    project.write_text(spec.replace("mylfs:exclaims", "mylfs:broken"), encoding="utf-8")
    with pytest.raises(StageError) as caught:
        run_spec(project, project.parent / "b", principal="team:a")
    assert caught.value.diagnostics[0].code == "FM0706"
    assert "returned 'eggs'" in caught.value.diagnostics[0].message
