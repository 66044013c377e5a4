"""The verifier corpus: every file in tests/verify/ is a spec with its expected verdict.

Each case states what `fmc` must conclude in its leading comment lines:

    # verdict: feasible | infeasible
    # knob: NAME = VALUE           a knob the solver must choose (report.knobs[NAME])
    # row: LINE VERDICT            the verdict of the constraint on LINE (ok, infeasible, gate)
    # core: FMxxxx at L1, L2, ...  one diagnostic: its code and the exact set of lines its
                                   labels mark (`file.fm:L` for another file); `primary L`
                                   at the end also pins the primary label's line
    # xfail: REASON                a known verifier bug: the case is a strict xfail

An infeasible case lists one `# core:` line per diagnostic, and the diagnostics must be
exactly those (as a multiset). A feasible case must verify with no error at all.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.api import CheckResult, check_paths, check_text
from fmlang.diagnostics import Diagnostic, Severity

CORPUS = Path(__file__).parent / "verify"
EXAMPLES = Path(__file__).parent.parent / "examples"
HEADER = re.compile(r"#\s*(verdict|knob|row|core|xfail):\s*(.*?)\s*$")
CORE = re.compile(r"(FM\d{4})\s+at\s+([\w.:,\s]+?)(?:\s+primary\s+(\d+))?$")
# FM0609 is the solver giving up, FM0610 a refusal to tabulate; FM0611 is fail-closed access
VERIFY_CODES = {f"FM06{n:02d}" for n in range(1, 9)} | {"FM0611"}


@dataclass
class Expected:
    verdict: str = ""
    knobs: dict[str, int | str] = field(default_factory=dict)
    rows: dict[int, str] = field(default_factory=dict)
    cores: Counter[tuple[str, frozenset[str]]] = field(default_factory=Counter)
    primaries: dict[tuple[str, frozenset[str]], str] = field(default_factory=dict)
    xfail: str | None = None


def _value(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def expected_in(path: Path) -> Expected:
    expected = Expected()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = HEADER.match(line)
        if match is None:
            continue
        key, rest = match.groups()
        if key == "verdict":
            expected.verdict = rest
        elif key == "knob":
            name, _, value = rest.partition("=")
            expected.knobs[name.strip()] = _value(value.strip())
        elif key == "row":
            number, verdict = rest.split()
            expected.rows[int(number)] = verdict
        elif key == "xfail":
            expected.xfail = rest
        else:
            _add_core(expected, path, rest)
    return expected


def _add_core(expected: Expected, path: Path, text: str) -> None:
    match = CORE.match(text)
    assert match is not None, f"{path.name}: malformed `# core: {text}`"
    code, lines, primary = match.groups()
    where = frozenset(_place(path, token.strip()) for token in lines.split(","))
    expected.cores[(code, where)] += 1
    if primary is not None:
        expected.primaries[(code, where)] = _place(path, primary)


def _place(path: Path, token: str) -> str:
    """`12` in the case file itself, `other.fm:12` in another file."""
    return token if ":" in token else f"{path.name}:{int(token)}"


def _where(d: Diagnostic) -> frozenset[str]:
    return frozenset(f"{Path(label.span.file).name}:{label.span.line}" for label in d.labels)


def _primary(d: Diagnostic) -> str | None:
    span = d.primary_span
    return f"{Path(span.file).name}:{span.line}" if span is not None else None


def _errors(result: CheckResult) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def _show(errors: list[Diagnostic]) -> str:
    return "\n".join(
        f"  {d.code} at {sorted(_where(d))} primary {_primary(d)}: {d.message}" for d in errors
    )


def corpus() -> list[pytest.ParameterSet]:
    cases = []
    for path in sorted(CORPUS.glob("*.fm")):
        reason = expected_in(path).xfail
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases.append(pytest.param(path, id=path.stem, marks=marks))
    return cases


CASES = corpus()


@pytest.mark.parametrize("path", CASES)
def test_verdict(path: Path) -> None:
    expected = expected_in(path)
    assert expected.verdict in ("feasible", "infeasible"), f"{path.name}: no `# verdict:`"
    result = check_paths([path], verify=True)
    report = result.report
    errors = _errors(result)
    assert report is not None, "the spec does not check clean:\n" + _show(errors)
    assert all(d.code.startswith("FM06") for d in errors), _show(errors)

    if expected.verdict == "feasible":
        assert report.feasible, "expected feasible, got:\n" + _show(errors)
        assert not errors, _show(errors)
    else:
        assert not report.feasible
        found = Counter((d.code, _where(d)) for d in errors)
        assert found == expected.cores, "diagnostics differ:\n" + _show(errors)
        for d in errors:
            want = expected.primaries.get((d.code, _where(d)))
            if want is not None:
                assert _primary(d) == want, f"{d.code}: primary label at {_primary(d)}"

    chosen = {name: report.knobs.get(name) for name in expected.knobs}
    assert chosen == expected.knobs, f"all knobs: {report.knobs}"
    rows = {row["line"]: row["verdict"] for row in report.constraints}
    assert {line: rows.get(line) for line in expected.rows} == expected.rows, rows


def test_corpus_covers_every_conflict_kind() -> None:
    expectations = [expected_in(path) for path in sorted(CORPUS.glob("*.fm"))]
    assert len(expectations) >= 32
    verdicts = Counter(e.verdict for e in expectations)
    assert verdicts["feasible"] >= 12 and verdicts["infeasible"] >= 16, verdicts
    # every verifier code except "the solver gave up" has a case
    assert {code for e in expectations for code, _ in e.cores} == VERIFY_CODES
    # knob choices of every kind are pinned by at least one passing case
    knobs = {name.split(".", 1)[1] for e in expectations if not e.xfail for name in e.knobs}
    assert {"rank", "quantize", "max_seq", "serve_batch", "kserve.replicas"} <= knobs


# ---- properties of the verifier beyond single verdicts -----------------------------


def _report_json(path: Path) -> str:
    result = check_paths([path], verify=True)
    assert result.report is not None
    return json.dumps(result.report.to_json(), sort_keys=True)


@pytest.mark.parametrize("name", ["capacity_batch_auto", "merge_rank_auto_equalized"])
def test_report_is_deterministic(name: str) -> None:
    path = CORPUS / f"{name}.fm"
    assert _report_json(path) == _report_json(path)


def test_conflict_labels_are_deterministic() -> None:
    path = CORPUS / "two_conflicts.fm"
    runs = {_report_json(path) for _ in range(6)}
    assert len(runs) == 1


def test_check_text_and_check_paths_agree() -> None:
    path = CORPUS / "throughput_vs_cost.fm"
    by_path = check_paths([path], verify=True)
    by_text = check_text(path.read_text(), str(path), path.parent, verify=True)
    assert [(d.code, _where(d)) for d in _errors(by_text)] == [
        (d.code, _where(d)) for d in _errors(by_path)
    ]


def test_without_verify_no_verdicts() -> None:
    result = check_paths([CORPUS / "memory_8b_bf16_a10g.fm"], verify=False)
    assert result.report is None
    assert not _errors(result)


def test_feasible_report_has_estimates_for_bounded_rows() -> None:
    result = check_paths([CORPUS / "throughput_tokens_batch.fm"], verify=True)
    assert result.report is not None
    rows = {row["line"]: row for row in result.report.constraints}
    assert rows[20]["unit"] == "tok/s" and rows[20]["estimate"] >= 2000
    assert rows[21]["unit"] == "s" and rows[21]["estimate"] <= 0.5


def test_resource_conflicts_carry_numbers() -> None:
    """An FM0601 diagnostic on a constraint line says the best value any choice reaches."""
    result = check_paths([CORPUS / "memory_8b_bf16_a10g.fm"], verify=True)
    (error,) = _errors(result)
    assert any("15 GiB" in note and "8 GiB" in note for note in error.notes), error.notes
    assert error.help is not None and "line 16" in error.help


def test_license_messages_are_grammatical() -> None:
    for name in ("license_not_in_list", "license_research_only"):
        result = check_paths([CORPUS / f"{name}.fm"], verify=True)
        for error in _errors(result):
            for text in [error.message, *(label.text for label in error.labels)]:
                assert "must in " not in text and "must allows " not in text, text


TOTAL_COST = """\
import std.models.qwen2_5_0_5b
import std.hardware.a10g

model chat {
  base    qwen2_5_0_5b
  task    generate
  adapter lora(rank = 8, targets = [q_proj, v_proj])
}

constraints chat {
  cost <= 100USD
}
"""


def test_total_cost_is_not_reported_ok_unchecked() -> None:
    result = check_text(TOTAL_COST, "total_cost.fm", CORPUS, verify=True)
    assert result.report is not None
    (row,) = result.report.constraints
    assert row["verdict"] != "ok" or "estimate" in row, row


# ---- the examples and the command line ---------------------------------------------


EXAMPLE_ENTRIES = [
    pytest.param(EXAMPLES / "adapter_merge" / "merge.fm", id="adapter_merge"),
    pytest.param(EXAMPLES / "support_assistant" / "assistant.fm", id="support_assistant"),
    pytest.param(EXAMPLES / "youtube_spam" / "spam.fm", id="youtube_spam"),
]


@pytest.mark.parametrize("path", EXAMPLE_ENTRIES)
def test_examples_verify(path: Path) -> None:
    result = check_paths([path], verify=True)
    assert result.report is not None and result.report.feasible, _show(_errors(result))


def test_cli_plan_json_reports_knobs() -> None:
    from fmlang.cli.main import cli

    path = CORPUS / "rank_auto_memory_largest_fit.fm"
    outcome = CliRunner().invoke(cli, ["plan", str(path), "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert document["feasible"] is True
    assert document["knobs"]["embedder.rank"] == 8


def test_cli_check_fails_on_an_infeasible_spec() -> None:
    from fmlang.cli.main import cli

    path = CORPUS / "latency_too_tight.fm"
    outcome = CliRunner().invoke(cli, ["check", str(path), "--format", "short"])
    assert outcome.exit_code == 1
    assert "latency_too_tight.fm:14:3: error[FM0601]" in outcome.output


def test_cli_build_writes_verify_json(tmp_path: Path) -> None:
    from fmlang.cli.main import cli

    path = CORPUS / "capacity_batch_auto.fm"
    outcome = CliRunner().invoke(cli, ["build", str(path), "-o", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads((tmp_path / "verify.json").read_text())
    assert document["feasible"] is True
    assert document["knobs"]["chat.serve_batch"] == 8
