"""The TextMate grammar (editors/vscode/syntaxes/fm.tmLanguage.json) under a real tokenizer:
vscode-tmgrammar-test (npm) runs the assertions in editors/vscode/tests/*.fm. Needs node and
npm; the test installs the tool into editors/vscode/node_modules on first use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fmlang.syntax.incremental import TOP_LEVEL

EXTENSION = Path(__file__).resolve().parent.parent / "editors" / "vscode"
GRAMMAR = EXTENSION / "syntaxes" / "fm.tmLanguage.json"
TOOL = EXTENSION / "node_modules" / ".bin" / "vscode-tmgrammar-test"


def _installed_tool() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    if not TOOL.exists():
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=EXTENSION,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0 or not TOOL.exists():
            pytest.skip(f"cannot install vscode-tmgrammar-test: {done.stderr.strip()[-300:]}")
    return TOOL


def test_grammar_assertions_hold_under_a_real_tokenizer() -> None:
    tool = _installed_tool()
    cases = sorted(str(p.relative_to(EXTENSION)) for p in (EXTENSION / "tests").glob("*.fm"))
    assert cases, "no grammar test files"
    done = subprocess.run(
        [str(tool), "--grammar", str(GRAMMAR.relative_to(EXTENSION)), *cases],
        cwd=EXTENSION,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("run successfuly") == len(cases), done.stdout


def test_grammar_knows_every_top_level_keyword() -> None:
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    assert grammar["scopeName"] == "source.fm"
    text = json.dumps(grammar)
    for keyword in TOP_LEVEL:
        assert keyword in text, keyword


def test_extension_manifest_points_at_its_files() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    contributes = manifest["contributes"]
    assert contributes["languages"][0]["extensions"] == [".fm"]
    for path in (
        contributes["languages"][0]["configuration"],
        contributes["grammars"][0]["path"],
        manifest["main"],
    ):
        assert (EXTENSION / path).is_file(), path
    configuration = json.loads((EXTENSION / "language-configuration.json").read_text())
    assert configuration["comments"]["lineComment"] == "#"
