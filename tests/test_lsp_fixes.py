"""The quick fixes behind `fmc lsp`'s code actions (fmlang/lsp/fixes.py), without a server:
each misspelling, missing import or split unit gets exactly the edit that restores the
clean spec, and the verifier's bound change is rounded so that it still holds."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("lsprotocol")

from fmlang.api import check_text
from fmlang.diagnostics import Fix, Span
from fmlang.lsp.fixes import fixes_for
from fmlang.verify.bound_fix import bound_fix
from tests.test_lsp import SPEC

BROKEN = {
    "setting argument": ("rank = 8", "rnak = 8", "FM0308"),
    "column": ("input = CONTENT", "input = CONTNT", "FM0403"),
    "column in a labeling function": ("CONTENT ~ /https", "CONTNT ~ /https", "FM0403"),
    "tag": ("@gold", "@gld", "FM0311"),
    "column type": ("ID:      string", "ID:      strng", "FM0310"),
    "stdlib name": ("std.models.minilm_l6", "std.models.minlm_l6", "FM0204"),
    "unit, by case": ("1GiB", "1GIB", "FM0303"),
    "split": ("comments.test", "comments.tset", "FM0404"),
    "class": ("-> spam", "-> spma", "FM0405"),
    "setting": ("  classes [ham, spam]", "  clases [ham, spam]", "FM0301"),
    "function": ("words(CONTENT)", "wrds(CONTENT)", "FM0324"),
    "model": ("constraints spam_filter", "constraints spam_fitler", "FM0401"),
    "unit with a space": ("memory <= 1GiB", "memory <= 1 GiB", "FM0303"),
}


def apply(text: str, fix: Fix) -> str:
    lines = text.split("\n")
    row, span = fix.span.line - 1, fix.span
    assert span.line == span.end_line
    lines[row] = lines[row][: span.column - 1] + fix.text + lines[row][span.end_column - 1 :]
    return "\n".join(lines)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_fix_restores_the_spec(case: str) -> None:
    good, bad, code = BROKEN[case]
    text = SPEC.replace(good, bad, 1)
    diagnostics = check_text(text, "t.fm").diagnostics
    (diagnostic,) = [d for d in diagnostics if d.code == code]
    fixes = fixes_for(diagnostic, "t.fm", text)
    assert len(fixes) == 1, fixes
    assert apply(text, fixes[0]) == SPEC


def test_an_unimported_stdlib_name_gets_its_import_once() -> None:
    text = SPEC.replace("import std.hardware.{cpu_2core}\n", "")
    (diagnostic,) = check_text(text, "t.fm").diagnostics
    (fix,) = fixes_for(diagnostic, "t.fm", text)
    assert (fix.span.line, fix.span.column, fix.text) == (2, 1, "import std.hardware.cpu_2core\n")
    # a misspelt import is fixed where it is written, not by importing the name again
    typo = SPEC.replace("std.models.minilm_l6", "std.models.minlm_l6")
    unknown = [d for d in check_text(typo, "t.fm").diagnostics if d.code == "FM0401"]
    assert unknown and all(fixes_for(d, "t.fm", typo) == [] for d in unknown)


def test_a_name_with_no_near_match_gets_no_fix() -> None:
    text = SPEC.replace("input = CONTENT", "input = XYZZY")
    (diagnostic,) = check_text(text, "t.fm").diagnostics
    assert fixes_for(diagnostic, "t.fm", text) == []


SPAN = Span("t.fm", 1, 1, 1, 7)


def number(literal: str) -> float:
    found = re.match(r"[0-9.]+", literal)
    assert found is not None
    return float(found.group())


@pytest.mark.parametrize(
    ("written", "value", "needed", "upper", "expected"),
    [
        ("2500ms", 2.5, 2.8471, True, "2850ms"),  # raised: rounded up, in ms
        ("2500ms", 2.5, 2.8529, True, "2860ms"),
        ("0.9", 0.9, 0.85389, False, "0.853"),  # lowered: rounded down
        ("90%", 0.9, 0.85389, False, "85.3%"),
        ("10req/s", 10.0, 5.3, False, "5.3req/s"),
        ("1GiB", 2.0**30, 1.37 * 2.0**30, True, "1.37GiB"),
        ("3000tok/s", 3000.0, 1428.57, False, "1420tok/s"),
    ],
)
def test_bound_rewritten_in_the_users_unit(
    written: str, value: float, needed: float, upper: bool, expected: str
) -> None:
    fix = bound_fix(SPAN, written, value, needed, upper)
    assert fix is not None and fix.text == expected
    scale = value / number(written)  # base units per written unit
    new_bound = number(fix.text) * scale
    assert new_bound >= needed if upper else new_bound <= needed  # it still holds
    assert abs(new_bound - needed) / needed < 0.01  # and moves no further than rounding


def test_no_bound_fix_without_a_number() -> None:
    assert bound_fix(SPAN, "auto", 1.0, 2.0, True) is None
    assert bound_fix(SPAN, "0ms", 0.0, 2.0, True) is None
