"""`fmc run`'s story: the end-of-run summary (golden JSON), the libraries' output kept in
each stage's log instead of on screen, and `--dry-run` naming exactly the stages an edit
affects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from fmlang.cli.main import cli
from tests.data_helpers import TESTER
from tests.test_run_train import project

GOLDEN = Path(__file__).parent / "golden_run" / "tiny_generate_summary.json"


def fmc_run(spec: Path, build: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["run", str(spec), "-o", str(build), "--as", TESTER, *extra]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def normalised(document: Any, root: Path) -> Any:
    """Times to 0, the temporary folder to `<tmp>`, measured memory to its type."""
    if isinstance(document, dict):
        out = {k: 0 if k == "wall_s" else normalised(v, root) for k, v in document.items()}
        if out.get("what", "").startswith("training memory") and out.get("measured"):
            out["measured"] = "<GiB measured>"
        return out
    if isinstance(document, list):
        return [normalised(item, root) for item in document]
    if isinstance(document, str):
        return document.replace(str(root.resolve()), "<tmp>").replace(str(root), "<tmp>")
    return document


def test_the_summary_json_of_a_run_and_of_its_cached_rerun(
    tmp_path: Path, tiny_model: Path, update_golden: bool
) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    code, first, said = fmc_run(spec, build, "--format", "json")
    assert code == 0, said
    code, again, said = fmc_run(spec, build, "--format", "json")
    assert code == 0, said
    actual = {"first": normalised(json.loads(first), tmp_path),
              "again": normalised(json.loads(again), tmp_path)}  # fmt: skip
    text = json.dumps(actual, indent=2, sort_keys=True) + "\n"
    if update_golden:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), f"{GOLDEN} differs (--update-golden)"


def test_library_output_goes_to_the_stage_log_and_the_summary_ends_the_run(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    code, _, said = fmc_run(spec, build)
    assert code == 0, said
    for noise in ("Loading weights", "it/s", "train_runtime", "%|"):
        assert noise not in said, noise
    log = (build / "run/logs/train-helper.log").read_text(encoding="utf-8")
    assert "Loading weights" in log  # transformers' bars, kept for whoever debugs
    assert re.search(r"trained 4 steps in [\d.]+ s, loss \d+\.\d{1,3}\n", said), said
    assert "summary: 2 ran, 0 cached" in said
    assert "perplexity 1024 [1023, 1024] at 95% <= 100000  pass" in said
    assert f"{build}/run/logs" in said and "\n  done\n" not in said


def plan(spec: Path, build: Path) -> dict[str, str]:
    """The dry run's stages that would run, with why."""
    code, out, said = fmc_run(spec, build, "--dry-run", "--format", "json")
    assert code == 0, said
    stages = json.loads(out)["stages"]
    return {s["stage"]: s["reason"] for s in stages if s["status"] == "would run"}


def test_dry_run_names_exactly_the_stages_an_edit_affects(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "100000")
    build = tmp_path / "build"
    original = spec.read_text(encoding="utf-8")
    never = "it has not run in this build folder before"
    assert plan(spec, build) == {
        "data:tickets": never,
        "train:helper": f"`data:tickets` would run first; {never}",
    }
    assert not (build / "run/data").exists(), "a dry run runs nothing"
    assert fmc_run(spec, build)[0] == 0
    cache = (build / "run/cache.json").read_bytes()
    assert plan(spec, build) == {}

    spec.write_text(original.replace("lr         = 1e-3", "lr         = 2e-3"))
    (why,) = plan(spec, build).items()
    assert why[0] == "train:helper"
    assert why[1].startswith("setting `learning_rate` changed: 0.001 → 0.002")

    rule = "  clean { drop where length(question) < 3 }\n  split {"
    spec.write_text(original.replace("  split {", rule))
    assert plan(spec, build) == {
        "data:tickets": "the pipeline's steps changed: `drop where length(question) < 3` added",
        "train:helper": "`data:tickets` would run first",
    }
    spec.write_text(original)
    assert plan(spec, build) == {}
    assert (build / "run/cache.json").read_bytes() == cache, "a dry run records nothing"


LABELS_SPEC = """\
dataset c {
  source csv("c.csv")
  schema {
    id: string @id
    body: text
  }
  clean { drop where length(body) < 3 }
  split { train 80%, test 20% by hash(id) }
  grant read, label to "team:ml"
}

labels spam on c.train {
  classes [ham, spam]
  lf check_out: body ~ /check (it )?out/i -> spam
  lf subscribe: body contains "subscribe" -> spam
  lf love:      body contains "love" -> ham
  model majority
}
"""


def test_dry_run_names_the_labeling_function_that_changed(tmp_path: Path) -> None:
    bodies = ["check out my channel", "great song", "subscribe now", "love this", "ok"]
    rows = ["id,body", *(f"{i},{bodies[i % len(bodies)]}" for i in range(40))]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec, build = tmp_path / "s.fm", tmp_path / "build"
    spec.write_text(LABELS_SPEC, encoding="utf-8")
    assert fmc_run(spec, build, "--until", "labels")[0] == 0
    assert plan(spec, build) == {}
    spec.write_text(LABELS_SPEC.replace('"love" -> ham', '"great" -> ham'), encoding="utf-8")
    assert plan(spec, build) == {
        "labels:spam": 'the labeling functions changed: `lf love: body contains "love" -> ham` '
        '→ `lf love: body contains "great" -> ham`'
    }
