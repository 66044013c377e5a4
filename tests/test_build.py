"""`fmc build` writes a deterministic fm.lock.json that hashes every input, data included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPAM = ROOT / "examples" / "youtube_spam" / "spam.fm"


def _build(cwd: Path, spec: str, out: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "fmlang", "build", spec, "-o", str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lock: dict[str, object] = json.loads((out / "fm.lock.json").read_text())
    return lock


def test_lock_is_identical_from_any_directory(tmp_path: Path) -> None:
    first = _build(ROOT, str(SPAM.relative_to(ROOT)), tmp_path / "a")
    second = _build(SPAM.parent, SPAM.name, tmp_path / "b")
    assert first == second
    assert (tmp_path / "a" / "fm.lock.json").read_bytes() == (
        tmp_path / "b" / "fm.lock.json"
    ).read_bytes()


def test_lock_hashes_specs_stdlib_and_data(tmp_path: Path) -> None:
    lock = _build(ROOT, str(SPAM), tmp_path / "out")
    inputs = lock["inputs"]
    assert isinstance(inputs, dict)
    assert "spam.fm" in inputs and "<std>/models.fm" in inputs
    data = [k for k in inputs if k.startswith("data/raw/")]
    assert len(data) == 5 and all(inputs[k].startswith("sha256:") for k in data)
    assert lock["schema_version"] == "1" and lock["ir"]["schema_version"] == "1"  # type: ignore[index]


def test_lock_changes_when_data_changes(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    spec = project / "s.fm"
    spec.write_text(
        'dataset d {\n  source csv("data/*.csv")\n  schema { a: int }\n  grant read to ana\n}\n',
        encoding="utf-8",
    )
    (project / "data" / "x.csv").write_text("a\n1\n", encoding="utf-8")
    before = _build(project, "s.fm", tmp_path / "o1")["inputs"]
    (project / "data" / "x.csv").write_text("a\n2\n", encoding="utf-8")
    after = _build(project, "s.fm", tmp_path / "o2")["inputs"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert before["data/x.csv"] != after["data/x.csv"]
    assert before["s.fm"] == after["s.fm"]


def test_lock_file_is_readable_by_others(tmp_path: Path) -> None:
    _build(ROOT, str(SPAM), tmp_path / "out")
    mode = (tmp_path / "out" / "fm.lock.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
