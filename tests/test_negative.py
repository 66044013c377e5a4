"""The negative corpus: every file in tests/negative/ is a spec with known mistakes.

Each expected diagnostic is an inline comment on the line where its primary span starts:
`# expect: FM0301` for an error, `# warn: FM0371` for a warning (several codes
comma-separated). A subfolder is one case whose entry file is `main.fm` or starts with a
`# entry` line; files under `shared/` are imported helpers. The errors and the warnings of
every user file a case loads are compared, each as a multiset of (file, line, code), with
the expectations written in those files.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from fmlang.api import CheckResult, check_paths
from fmlang.diagnostics import Severity
from fmlang.diagnostics.codes import CODES

NEGATIVE = Path(__file__).parent / "negative"
EXPECT = re.compile(r"#\s*expect:\s*(FM\d{4}(?:\s*,\s*FM\d{4})*)")
WARN = re.compile(r"#\s*warn:\s*(FM\d{4}(?:\s*,\s*FM\d{4})*)")
HELPERS = {"shared"}


def _entry_of(folder: Path) -> Path | None:
    for path in sorted(folder.glob("*.fm")):
        if path.name == "main.fm" or _text(path).startswith("# entry"):
            return path
    return None


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def corpus() -> list[Path]:
    cases = sorted(NEGATIVE.glob("*.fm"))
    for folder in sorted(p for p in NEGATIVE.iterdir() if p.is_dir() and p.name not in HELPERS):
        entry = _entry_of(folder)
        assert entry is not None, f"{folder} has no main.fm or `# entry` file"
        cases.append(entry)
    return cases


def expected_in(path: Path, pattern: re.Pattern[str] = EXPECT) -> Counter[tuple[str, int, str]]:
    found: Counter[tuple[str, int, str]] = Counter()
    for number, line in enumerate(_text(path).splitlines(), start=1):
        match = pattern.search(line)
        if match:
            for code in match.group(1).split(","):
                found[(path.name, number, code.strip())] += 1
    return found


def _user_paths(result: CheckResult) -> list[Path]:
    return [Path(f.path).resolve() for f in result.program.user_files()]


def _reported(
    result: CheckResult, severity: Severity = Severity.ERROR
) -> Counter[tuple[str, int, str]]:
    found: Counter[tuple[str, int, str]] = Counter()
    for d in result.diagnostics:
        if d.severity is severity and d.primary_span is not None:
            found[(Path(d.primary_span.file).name, d.primary_span.line, d.code)] += 1
    return found


CASES = corpus()


@pytest.fixture(autouse=True)
def _shared_data_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case in a subfolder imports `../shared/…`, whose datasets read under shared/:
    outside the case's project folder, so allowed as `--allow-data` would."""
    monkeypatch.setenv("FMC_DATA_DIRS", str(NEGATIVE / "shared"))


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(NEGATIVE)) for p in CASES])
def test_expected_diagnostics(path: Path) -> None:
    result = check_paths([path])
    expected: Counter[tuple[str, int, str]] = Counter()
    warned: Counter[tuple[str, int, str]] = Counter()
    for user_path in {path.resolve(), *_user_paths(result)}:
        expected += expected_in(user_path)
        warned += expected_in(user_path, WARN)
    assert expected or warned, f"{path.name} declares no `# expect:` or `# warn:` comment"
    shown = "\n".join(
        f"{d.primary_span.file if d.primary_span else '?'}:"
        f"{d.primary_span.line if d.primary_span else '?'}: {d.severity.value} {d.code} "
        f"{d.message}"
        for d in result.diagnostics
    )
    assert _reported(result) == expected, shown
    assert _reported(result, Severity.WARNING) == warned, shown
    assert result.ok == (not expected)


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(NEGATIVE)) for p in CASES])
def test_diagnostics_are_well_formed(path: Path) -> None:
    for d in check_paths([path]).diagnostics:
        assert d.code in CODES, f"{d.code} is not registered in CODES"
        assert d.primary_span is not None, f"{d.code} has no primary span"
        assert d.message.strip(), f"{d.code} has an empty message"
        assert d.primary_span.line >= 1 and d.primary_span.column >= 1


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 45


def test_helpers_are_valid() -> None:
    for path in sorted((NEGATIVE / "shared").glob("*.fm")):
        result = check_paths([path])
        assert result.ok, [d.message for d in result.diagnostics]


def test_every_expectation_belongs_to_a_case() -> None:
    """An `# expect:` in a file no case loads would silently never be checked."""
    loaded = {p for case in CASES for p in (case.resolve(), *_user_paths(check_paths([case])))}
    expecting = {
        p.resolve() for p in NEGATIVE.rglob("*.fm") if expected_in(p) or expected_in(p, WARN)
    }
    assert expecting <= loaded, sorted(str(p) for p in expecting - loaded)
