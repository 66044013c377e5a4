"""The wheel carries the grammar and the stdlib, and fmc runs from it (not from the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return next(out.glob("*.whl"))


def test_wheel_contains_grammar_and_stdlib(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fmlang/_data/grammar/fm.lark" in names
    for module in ("models", "hardware", "labeling"):
        assert f"fmlang/_data/stdlib/{module}.fm" in names


def test_fmc_checks_an_example_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import fmlang.paths as p; print(p.grammar_file())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site))
    spec = ROOT / "examples" / "youtube_spam" / "spam.fm"
    done = subprocess.run(
        [sys.executable, "-m", "fmlang", "check", str(spec)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
