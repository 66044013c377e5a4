"""The diagnostic code registry: every code is documented, and every code used is registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.cli.main import cli
from fmlang.diagnostics.codes import CODES, is_io

PACKAGE = Path(__file__).resolve().parent.parent / "fmlang"
CODE = re.compile(r"\bFM\d{4}\b")


def _codes_in_sources() -> dict[str, set[str]]:
    """Every `FMxxxx` written in the package's Python files, with the files that write it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for code in CODE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(code, set()).add(str(path.relative_to(PACKAGE)))
    return found


@pytest.mark.parametrize("code", sorted(CODES))
def test_code_is_documented(code: str) -> None:
    entry = CODES[code]
    assert re.fullmatch(r"FM\d{4}", code)
    assert entry.title.strip() and entry.title == entry.title.strip()
    assert not entry.title.endswith("."), "titles are phrases, not sentences"
    assert len(entry.explanation.strip()) >= 20, "explain what is wrong and how to fix it"


def test_every_code_used_in_the_package_is_registered() -> None:
    unregistered = {
        code: sorted(files) for code, files in _codes_in_sources().items() if code not in CODES
    }
    assert not unregistered, f"register these in fmlang/diagnostics/codes.py: {unregistered}"


def test_every_registered_code_is_used() -> None:
    used = {
        code
        for code, files in _codes_in_sources().items()
        if files - {str(Path("diagnostics") / "codes.py")}
    }
    assert set(CODES) - used == set(), "a code nothing reports: remove it or report it"


def test_codes_are_listed_in_order() -> None:
    assert list(CODES) == sorted(CODES), "codes.py lists codes in ascending order"


def test_only_io_problems_exit_2() -> None:
    assert "FM0001" in [code for code in CODES if is_io(code)]
    assert not is_io("FM9999")


@pytest.mark.parametrize("code", sorted(CODES))
def test_explain_each_code(code: str) -> None:
    runner = CliRunner()
    for spelling in (code, code.lower(), code[2:]):
        result = runner.invoke(cli, ["explain", spelling])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{code}: {CODES[code].title}\n\n")
        assert CODES[code].explanation in result.output
