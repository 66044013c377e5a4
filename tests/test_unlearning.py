"""Unlearning: `forget "file"` requests remove rows from every output of the data stage and
rerun exactly the stages downstream; the registry marks the versions trained on the rows
superseded, the audit log records each request once, and bad request files are diagnostics
at their lines. Tiny random Llamas, small JSON Lines datasets; in-process."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fmlang.api import build as build_artifacts
from fmlang.api import check_paths, compile_spec
from fmlang.backends.registry import open_registry
from fmlang.backends.run import RunOptions, run
from fmlang.errors import StageError
from fmlang.lower.pipeline import lower_dataset
from tests.data_helpers import GRANT, TESTER, run_spec, write_csv

SPEC = """\
import std.models.tiny_causal_lm

dataset tickets {
  source jsonl("tickets.jsonl")
  forget "forget/requests.jsonl"
  schema {
    id: string @id
    question: text
    answer: text
  }
  clean { dedupe question }
  split { train 70%, test 30% by hash(id) }
  grant read, label, train, deploy to "team:ml"
}

dataset other {
  source jsonl("other.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
  }
  split { train 70%, test 30% by hash(id) }
  grant read, train, deploy to "team:ml"
}

labels topic on tickets.train {
  classes [reset, other]
  lf reset: question contains "reset" -> reset
  lf secret: question contains "secret" -> other
  grant label to "team:ml"
}

model a {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer,
          max_steps = 1, lr = 1e-3, batch = 4, seed = 3 }
}

model a2 {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer,
          max_steps = 1, lr = 1e-3, batch = 4, seed = 5 }
}

model o {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = other.train, prompt = question, completion = answer,
          max_steps = 1, lr = 1e-3, batch = 4, seed = 7 }
}

merge both {
  models  [a, a2]
  method  linear
  weights [0.5, 0.5]
}
"""

SECRET = "my secret address is 12 elm street, please reset it"
BY_ID = ("3", "7")  # the rows request `gdpr-1` names


def project(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "question": f"how do I reset my password {i}?",
             "answer": f"open settings, choose security, then reset password {i}."}
            for i in range(24)]  # fmt: skip
    rows.append({"id": "99", "question": SECRET, "answer": "we will forget it."})
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    others = [{"id": f"o{i}", "question": f"where is my parcel {i}?", "answer": "on its way."}
              for i in range(12)]  # fmt: skip
    (tmp_path / "other.jsonl").write_text("\n".join(json.dumps(r) for r in others) + "\n")
    (tmp_path / "forget").mkdir()
    (tmp_path / "forget/requests.jsonl").write_text("", encoding="utf-8")
    spec = tmp_path / "project.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


REQUESTS = [
    {"request": "gdpr-1", "by": "user:ana", "at": "2026-12-01", "ids": list(BY_ID)},
    {"request": "gdpr-2", "by": "dpo@example.com", "at": "2026-12-02T09:30:00Z",
     "where": 'question contains "secret address"'},
]  # fmt: skip


def add_requests(spec: Path, requests: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in requests)
    (spec.parent / "forget/requests.jsonl").write_text(text, encoding="utf-8")


def ran(report: Any) -> list[str]:
    return sorted(o.stage for o in report.outcomes if not o.skipped)


def sha(value: object) -> str:
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


def forgotten_rows(spec: Path) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (spec.parent / "tickets.jsonl").read_text().splitlines()]
    return [r for r in rows if r["id"] in BY_ID or "secret address" in r["question"]]


def leaks(build: Path, forgotten: list[dict[str, str]]) -> list[str]:
    """Where a forgotten row's id (in an `id` column) or text (anywhere) is still found: every
    Parquet cell hashed and compared, and every file of the build folder searched for the
    texts' bytes."""
    ids = {sha(r["id"]) for r in forgotten}
    texts = {sha(r[c]) for r in forgotten for c in ("question", "answer")}
    found = []
    for path in sorted(build.rglob("*.parquet")):
        table = pq.read_table(path)
        for name in table.column_names:
            for value in table.column(name).to_pylist():
                digest = sha(value)
                if digest in texts or (name == "id" and digest in ids):
                    found.append(f"{path.relative_to(build)}:{name}")
    needles = [r["question"].encode() for r in forgotten]
    for path in sorted(p for p in build.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(build)} holds text" for n in needles if n in data]
    return found


def forget_entries(build: Path) -> list[dict[str, Any]]:
    lines = (build / "audit.log").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("action") == "forget"]


def test_forgetting_removes_rows_everywhere_and_reruns_exactly_downstream(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model)
    build = tmp_path / "build"
    first = run_spec(spec, build, until="merge")
    everything = ["data:other", "data:tickets", "labels:topic", "merge:both", "train:a",
                  "train:a2", "train:o"]  # fmt: skip
    assert ran(first) == everything
    forgotten = forgotten_rows(spec)
    assert len(forgotten) == 3 and leaks(build, forgotten)  # the scan finds rows that are there
    registry = open_registry(build)
    before = {v.ref: v.hash for v in registry.versions()}
    merged = sorted(ref for ref in before if ref.startswith("both@"))  # once merges register
    assert sorted(before) == sorted(["a2@1", "a@1", "o@1", *merged])

    add_requests(spec, REQUESTS)
    second = run_spec(spec, build, until="merge")
    # the forgotten dataset and exactly its dependents; `other` and its model stay cached
    assert ran(second) == ["data:tickets", "labels:topic", "merge:both", "train:a", "train:a2"]
    assert second.reasons["data:tickets"].startswith("forget file changed: sha256:")
    assert leaks(build, forgotten) == []
    report = json.loads((build / "run/data/tickets/report.json").read_text())
    assert report["forget"]["removed"] == {"gdpr-1": 2, "gdpr-2": 1}
    assert report["splits"]["all"] == 22

    versions = {v.ref: v for v in open_registry(build).versions()}
    superseded = sorted(ref for ref, v in versions.items() if v.lineage.superseded)
    assert superseded == sorted(["a2@1", "a@1", *merged])  # o@1 never saw the rows
    assert "gdpr-1" in (versions["a@1"].lineage.superseded or "")
    assert {"a@2", "a2@2"} <= set(versions)
    current = [ref for ref in versions if ref not in before]
    assert not any(versions[r].lineage.superseded for r in (*current, "o@1"))
    index = json.loads((build / "registry/index.json").read_text())
    assert sorted(e["hash"] for e in index["versions"] if e.get("superseded")) == sorted(
        before[r] for r in superseded
    )

    entries = forget_entries(build)
    assert [
        (e["request"], e["dataset"], e["rows_removed"], e["requested_by"]) for e in entries
    ] == [
        ("gdpr-1", "tickets", 2, "user:ana"),
        ("gdpr-2", "tickets", 1, "dpo@example.com"),
    ]
    assert all(e["principal"] == TESTER for e in entries)

    third = run_spec(spec, build, until="data", force=True)  # applied again: no new entry
    assert ran(third) == ["data:other", "data:tickets"] and len(forget_entries(build)) == 2
    assert leaks(build, forgotten) == []


def test_merges_of_superseded_versions_are_superseded(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from fmlang.backends.data.forget import supersede
    from fmlang.backends.registry import Lineage, Registry

    def version(name: str, parents: tuple[str, ...] = (), kind: str = "model") -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"name": name}))
        return registry.register(folder, Lineage(name=name, kind=kind, parents=parents)).hash

    registry = Registry(tmp_path / "build/registry")
    a, o = version("a"), version("o")
    version("both", (a, o), "merge")
    version("others", (o,), "merge")
    spec = SimpleNamespace(models=[
        SimpleNamespace(name="a", training=SimpleNamespace(data=SimpleNamespace(dataset="t"))),
        SimpleNamespace(name="o", training=SimpleNamespace(data=SimpleNamespace(dataset="u"))),
    ])  # fmt: skip
    ctx = SimpleNamespace(build_dir=tmp_path / "build", spec=spec, log=lambda _: None)
    applied = [{"request": "r1", "rows_removed": 2}]
    assert supersede(ctx, "t", applied) == ["a@1", "both@1"]  # type: ignore[arg-type]
    assert supersede(ctx, "t", applied) == []  # already marked


def test_the_same_adapter_registered_again_is_current_again(tmp_path: Path) -> None:
    from fmlang.backends.registry import Lineage, Registry

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    registry.mark_superseded(registry.register(adapter, Lineage(name="m")), "forgotten rows")
    again = registry.register(adapter, Lineage(name="m"))  # retrained on today's data
    assert again.ref == "m@1" and again.lineage.superseded is None
    assert registry.versions()[0].lineage.superseded is None
    index = json.loads((tmp_path / "registry/index.json").read_text())
    assert "superseded" not in index["versions"][0]


def test_the_log_command_shows_superseded_versions(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fmlang.backends.registry import Lineage, Registry
    from fmlang.cli.main import cli

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "build/registry")
    version = registry.register(adapter, Lineage(name="m"))
    marked = registry.mark_superseded(version, "trained on forgotten rows")
    assert marked.lineage.superseded == "trained on forgotten rows"
    again_by_ref = registry.mark_superseded("m@1", "again")  # keeps the first reason
    assert again_by_ref.lineage.superseded == marked.lineage.superseded
    (again,) = registry.versions()
    assert again.lineage.superseded == "trained on forgotten rows"
    result = CliRunner().invoke(cli, ["log", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    assert "superseded" in result.output and "trained on forgotten rows" in result.output
    shown = CliRunner().invoke(cli, ["log", str(tmp_path / "build"), "--format", "json"])
    assert json.loads(shown.output)["versions"][0]["lineage"]["superseded"]


def data_project(tmp_path: Path, requests: str, id_tag: str = "@id") -> Path:
    rows = [["a", "hello world"], ["b", "my secret"], ["c", "another row"], ["d", "keep"]]
    write_csv(tmp_path / "d.csv", ["id", "body"], rows)
    (tmp_path / "forget").mkdir(exist_ok=True)
    (tmp_path / "forget/requests.jsonl").write_text(requests, encoding="utf-8")
    spec = tmp_path / "d.fm"
    spec.write_text(
        "dataset d {\n"
        '  source csv("d.csv", header = true)\n'
        '  forget "forget/requests.jsonl"\n'
        f"  schema {{\n    id: string {id_tag}\n    body: text\n  }}\n"
        f"{GRANT}}}\n",
        encoding="utf-8",
    )
    return spec


def located(spec: Path) -> list[tuple[str, str, int, int]]:
    result = check_paths([spec])
    out = []
    for d in result.diagnostics:
        span = d.primary_span
        assert span is not None, d
        out.append((d.code, Path(span.file).name, span.line, span.column))
    return out


GOOD = '{"request": "r1", "by": "ana", "at": "2026-12-01", "ids": ["a"]}\n'


@pytest.mark.parametrize(
    ("line", "code", "column"),
    [
        ("not json", "FM0382", 1),
        ('{"request": "r1", "by": "bo", "at": "2026-12-01", "ids": ["b"]}', "FM0382", 1),
        ('{"request": "r2", "by": "bo", "at": "yesterday", "ids": ["b"]}', "FM0382", 1),
        ('{"request": "r2", "by": "bo", "at": "2026-12-01"}', "FM0382", 1),
        ('{"request": "r2", "by": "bo", "at": "2026-12-01", "ids": [], "x": 1}', "FM0382", 1),
        ('{"request": "r2", "by": "bo", "at": "2026-12-01", "where": "body contains"}',
         "FM0384", 75),
        ('{"request": "r2", "by": "bo", "at": "2026-12-01", "where": "bodyy == \\"x\\""}',
         "FM0403", 61),
        ('{"request": "r2", "by": "bo", "at": "2026-12-01", "where": "length(body)"}',
         "FM0322", 61),
    ],
)  # fmt: skip
def test_a_bad_request_is_a_diagnostic_at_its_line(tmp_path: Path, line: str, code: str,
                                                   column: int) -> None:  # fmt: skip
    spec = data_project(tmp_path, GOOD + line + "\n")
    assert located(spec) == [(code, "requests.jsonl", 2, column)]


def test_missing_files_and_ids_without_an_id_column_are_refused(tmp_path: Path) -> None:
    spec = data_project(tmp_path, GOOD, id_tag="")
    assert located(spec) == [("FM0383", "requests.jsonl", 1, 1)]
    (tmp_path / "forget/requests.jsonl").unlink()
    assert located(spec) == [("FM0381", "d.fm", 3, 10)]
    (tmp_path / "forget/requests.jsonl").mkdir()
    assert located(spec) == [("FM0381", "d.fm", 3, 10)]
    outside = data_project(tmp_path / "inner", GOOD)
    outside.write_text(outside.read_text().replace("forget/requests", "../forget/requests"))
    assert located(outside) == [("FM0381", "d.fm", 3, 10)]


def test_a_condition_request_removes_its_rows_in_sql_and_warns_about_no_match(
    tmp_path: Path,
) -> None:
    requests = GOOD + (
        '{"request": "r2", "by": "bo", "at": "2026-12-01", "where": "body contains \\"secret\\""}\n'
        '{"request": "r3", "by": "cy", "at": "2026-12-01", "ids": ["zzz"]}\n'
    )
    spec = data_project(tmp_path, requests)
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    dataset = compile_spec(result).datasets[0]
    step = lower_dataset(dataset).steps[2]
    assert step.title == "forget 3 requests (forget/requests.jsonl)"
    assert [r for r, _ in step.forget] == ["r1", "r2", "r3"]
    assert "forget" in lower_dataset(dataset, "spark").steps[2].table  # Spark runs it too
    build = tmp_path / "build"
    build_artifacts(result, build)
    options = RunOptions(build, spec, "data", TESTER, log=lambda _: None)
    _report, ctx = run(compile_spec(result), options, spec.read_text(encoding="utf-8"))
    kept = pq.read_table(build / "run/data/d/all.parquet").column("id").to_pylist()
    assert kept == ["c", "d"]
    assert [(d.code, d.primary_span.line if d.primary_span else 0) for d in ctx.diagnostics] == [
        ("FM0775", 3)
    ]


def test_a_forget_file_changed_after_the_check_stops_the_data_stage(tmp_path: Path) -> None:
    spec = data_project(tmp_path, GOOD)
    result = check_paths([spec], verify=True)
    build = tmp_path / "build"
    build_artifacts(result, build)
    (tmp_path / "forget/requests.jsonl").write_text(GOOD.replace('"a"', '"b"'))
    options = RunOptions(build, spec, "data", TESTER, log=lambda _: None)
    with pytest.raises(StageError) as raised:
        run(compile_spec(result), options, spec.read_text(encoding="utf-8"))
    assert [d.code for d in raised.value.diagnostics] == ["FM0774"]
    shutil.rmtree(build)
    run_spec(spec, build, until="data")  # checked again: runs with the new text
    kept = pq.read_table(build / "run/data/d/all.parquet").column("id").to_pylist()
    assert kept == ["a", "c", "d"]
