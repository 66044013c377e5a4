"""Access fails closed: a grant removed from the bundled example is an error on the line that
lost it, and `fmc run` refuses a principal before any stage does work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fmlang.api import check_paths, check_text
from fmlang.diagnostics import Diagnostic, Severity
from fmlang.verify.access import AccessModel
from tests.data_helpers import run_spec, write_csv

ROOT = Path(__file__).resolve().parent.parent
SPAM = ROOT / "examples" / "youtube_spam" / "spam.fm"
MERGE = ROOT / "examples" / "adapter_merge" / "merge.fm"


def errors_of(text: str, path: Path) -> list[Diagnostic]:
    result = check_text(text, str(path), path.parent, verify=True)
    return [d for d in result.diagnostics if d.severity == Severity.ERROR]


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_the_examples_grant_every_stage_they_run() -> None:
    for path in (SPAM, MERGE):
        assert errors_of(path.read_text(encoding="utf-8"), path) == []


# (what the grant line becomes, the code, the line the error must point at)
REMOVALS = {
    "dataset deploy": (
        ('grant read, label, train, deploy to "team:trust-safety"',
         'grant read, label, train to "team:trust-safety"'),
        "FM0611",
        "dataset comments {",
    ),
    "dataset label": (
        ('grant read, label, train, deploy to "team:trust-safety"',
         'grant read, train, deploy to "team:trust-safety"'),
        "FM0604",  # the labels block still grants label to trust-safety
        'grant read, label to "team:trust-safety"',
    ),
    "dataset train": (
        ('grant read, label, train, deploy to "team:trust-safety"',
         'grant read, label, deploy to "team:trust-safety"'),
        "FM0611",
        "dataset comments {",
    ),
    "endpoint query": (
        ('  grant query to "service:comment-ingest"\n', ""),
        "FM0611",
        "deploy spam_filter {",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REMOVALS))
def test_removing_a_grant_fails_the_check_at_its_line(case: str) -> None:
    (old, new), code, where = REMOVALS[case]
    original = SPAM.read_text(encoding="utf-8")
    assert old in original
    text = original.replace(old, new)
    found = [(d.code, d.primary_span.line if d.primary_span else 0) for d in errors_of(text, SPAM)]
    assert (code, line_of(text, where)) in found, found


def test_removing_a_merged_teams_deploy_grant_fails_the_merge(tmp_path: Path) -> None:
    copy = tmp_path / "adapter_merge"
    shutil.copytree(MERGE.parent, copy)
    team_a = copy / "team_a.fm"
    text = team_a.read_text(encoding="utf-8")
    model_grant = '  grant deploy to "team:support-platform"\n}\n\nmodel'
    assert model_grant in text  # the dataset's deploy grant, just before the model
    team_a.write_text(text.replace(model_grant, "}\n\nmodel"), encoding="utf-8")
    result = check_paths([copy / "merge.fm"], verify=True)
    found = {(d.code, Path(d.primary_span.file).name, d.primary_span.line)
             for d in result.diagnostics if d.primary_span}  # fmt: skip
    dataset_line = line_of(text, "dataset billing_tickets {")
    # the model still grants deploy to the platform team: refused by its data
    assert any(code == "FM0604" and name == "team_a.fm" for code, name, _ in found), found
    assert not any(line == dataset_line and code == "FM0611" for code, _, line in found)


def test_paths_fail_closed_and_narrow_along_the_way() -> None:
    text = SPAM.read_text(encoding="utf-8")
    result = check_text(text, str(SPAM), SPAM.parent, verify=True)
    assert result.spec is not None
    model = AccessModel(result.spec)
    assert model.allowed("data:comments") == {"team:trust-safety", "team:ml-platform"}
    assert model.allowed("labels:spam") == {"team:trust-safety"}
    assert model.allowed("train:spam_filter") == {"team:trust-safety"}
    assert model.allowed("deploy:spam_filter") == {"team:trust-safety"}
    assert model.allowed("query:spam_filter") == {"service:comment-ingest"}
    assert model.allowed("train:nothing") == frozenset()


SPEC = """\
import std.models.tiny_causal_lm

dataset c {
  source csv("c.csv", header = true)
  schema { id: string @id  text: text  gold: label[ham, spam] @gold }
  split { train 80%, test 20% by hash(id) }
  grant read to "team:a", "team:b"
  grant train to "team:b"
}

model m {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, targets = [q_proj, v_proj])
  train { data = c.train, prompt = text, completion = text, epochs = 1 }
}
"""


def test_a_missing_train_grant_is_refused_before_the_data_stage(tmp_path: Path) -> None:
    from fmlang.errors import StageError

    write_csv(tmp_path / "c.csv", ["id", "text", "gold"], [["1", "hi", "ham"]])
    spec = tmp_path / "s.fm"
    spec.write_text(SPEC, encoding="utf-8")
    build = tmp_path / "b"
    with pytest.raises(StageError) as caught:
        run_spec(spec, build, until="train", principal="team:a")
    (refusal,) = caught.value.diagnostics
    assert refusal.code == "FM0702" and "train:m" in refusal.message
    assert refusal.primary_span is not None
    assert refusal.primary_span.line == line_of(SPEC, 'grant train to "team:b"')
    assert not (build / "run" / "data").exists(), "nothing ran"
    log = [json.loads(line) for line in (build / "audit.log").read_text().splitlines()]
    assert [(e["stage"], e["decision"]) for e in log] == [
        ("data:c", "allowed"),
        ("train:m", "denied"),
    ]
