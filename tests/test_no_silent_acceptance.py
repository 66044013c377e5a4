"""Nothing in a spec is silently accepted: the bundled examples say nothing that has no
effect (not even a warning), a warning leaves `fmc check` successful, and the training
length is one number: what `fmc plan` shows, what the verifier budgets and what the job
truncates its rows at. The rules themselves are exercised by tests/negative/ (empty_*,
only_imports, no_effect)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.api import check_paths, check_text, compile_spec
from fmlang.cli.main import cli
from fmlang.diagnostics import Severity
from fmlang.lower.train_job import lower_job
from fmlang.lower.training import lower_training
from fmlang.verify.train_fit import training_memory_at

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.fm"))
NEGATIVE = ROOT / "tests" / "negative"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_have_no_warnings(path: Path) -> None:
    result = check_paths([path], verify=True)
    assert [f"{d.code} {d.message}" for d in result.diagnostics] == []


def test_a_warning_leaves_check_successful() -> None:
    outcome = CliRunner().invoke(
        cli, ["check", "--no-verify", "--format", "short", str(NEGATIVE / "only_imports.fm")]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "warning[FM0206]" in outcome.output


def test_a_file_of_file_imports_builds_them_together() -> None:
    """The build takes every loaded file's declarations: importing a spec is not empty."""
    text = 'import "shared/comments.fm"\nimport std.models.minilm_l6\n'
    result = check_text(text, str(NEGATIVE / "together.fm"), NEGATIVE)
    assert result.ok and [d.code for d in result.diagnostics] == []
    assert [d.name for d in compile_spec(result).datasets] == ["comments"]


# ---- the training length ------------------------------------------------------------

SPEC = """\
import std.models.tiny_causal_lm
import std.hardware.cpu_2core

dataset docs {
  source jsonl("docs.jsonl")
  schema { id: string @id; q: text; a: text }
  split { train 90%, test 10% by hash(id) }
  grant read, train to "team:ml"
}

model m {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, targets = [q_proj, v_proj])
  MAX_SEQ
  train { data = docs.train, prompt = q, completion = a, batch = 2, hardware = cpu_2core SEQ_LEN }
  grant train to "team:ml"
}
"""


def _lengths(max_seq: str, seq_len: str) -> tuple[int, int, int, int, float]:
    """(plan's train.seq_len, the verifier's budgeted length, the training plan's and the
    job's truncation length, the budgeted peak) for one spelling of the two settings."""
    text = SPEC.replace("MAX_SEQ", max_seq).replace("SEQ_LEN", seq_len)
    result = check_text(text, "t.fm", Path("."), verify=True)
    errors = [d.message for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.ok and result.report is not None, errors
    spec, knobs = compile_spec(result), dict(result.report.knobs)
    model = spec.models[0]
    found = training_memory_at(spec, model, knobs)
    assert found is not None
    setup, memory, _ = found
    plan = lower_training(spec, model, knobs)
    return (
        int(knobs["m.train.seq_len"]),
        setup.seq,
        plan.max_seq,
        int(lower_job(spec, model, knobs)["max_seq"]),
        memory.peak,
    )


@pytest.mark.parametrize(
    ("max_seq", "seq_len", "length"),
    [
        ("max_seq 64", ", seq_len = 128", 128),  # the training length, not the serving one
        ("max_seq 128", ", seq_len = 64", 64),
        ("max_seq 64", "", 64),  # a shorter serving length is the default
        ("", "", 256),  # the default (512), capped by the base's 256 positions
        ("max_seq auto in [64, 128]", ", seq_len = 128", 128),
        ("max_seq 64", ", seq_len = auto in [96, 160]", None),  # the solver's choice
    ],
)
def test_plan_budget_and_job_train_at_one_length(
    max_seq: str, seq_len: str, length: int | None
) -> None:
    shown, budgeted, planned, job, _ = _lengths(max_seq, seq_len)
    assert shown == budgeted == planned == job
    assert length is None or shown == length


def test_the_budget_follows_seq_len_past_max_seq() -> None:
    """Before, a serving `max_seq` silently cut the budget while `seq_len` was shown."""
    short = _lengths("max_seq 64", ", seq_len = 64")[4]
    long = _lengths("max_seq 64", ", seq_len = 256")[4]
    assert long > short
