"""The pieces of `fmc run`'s output: consoles that do not squeeze tables when piped, the
libraries' output captured into a stage's log, rule conditions in titles, and the
multi-line reasons of the stage cache."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
from rich.table import Table

from fmlang.api import check_text, compile_spec
from fmlang.backends.cache import _difference
from fmlang.backends.stage_output import captured, log_path
from fmlang.cli.console import UNBOUNDED, console
from fmlang.lower.pipeline import lower_dataset


def wide_table() -> Table:
    table = Table(title="registered adapters")
    for column in ("version", "ref", "metrics"):
        table.add_column(column)
    table.add_row("r00_" + "a" * 60, "helper@1", "accuracy@comments.test 0.9412 " * 3)
    return table


def test_a_piped_table_keeps_every_row_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    shown = console(stream=out)
    assert shown.width == UNBOUNDED
    shown.print(wide_table())
    (row,) = [line for line in out.getvalue().splitlines() if "r00_" in line]
    assert "r00_" + "a" * 60 in row and row.count("0.9412") == 3 and "…" not in row


def test_columns_decides_the_width_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert console(stream=io.StringIO()).width == 100


def test_library_output_goes_to_the_log_and_comes_back(tmp_path: Path) -> None:
    library = logging.getLogger("transformers.modeling_utils")
    before = logging.getLogger("transformers").handlers[:]
    stderr = sys.stderr
    with captured(tmp_path, "train:spam@x.test") as log:
        library.warning("classifier MISSING: newly initialized")
        print("Loading weights: 100%|██████████| 21/21", file=sys.stderr)
        print("{'train_runtime': '0.7'}")
    assert log == tmp_path / "run/logs/train-spam@x.test.log"
    assert log_path("labels:a b") == "run/logs/labels-a-b.log"
    text = log.read_text(encoding="utf-8")
    for line in ("classifier MISSING", "Loading weights", "train_runtime"):
        assert line in text
    assert sys.stderr is stderr and logging.getLogger("transformers").handlers == before


@pytest.mark.parametrize(
    ("rule", "title"),
    [
        ("drop where length(t) < 3", "drop where length(t) < 3"),
        (
            'keep where not t contains "a\\"b" or n > 2',
            'keep where not t contains "a\\"b" or n > 2',
        ),
        ("drop where (n - 1) * 2 >= 4 and t ~ /x+/i", "drop where (n - 1) * 2 >= 4 and t ~ /x+/i"),
        ("drop where n - (1 - 2) > 0", "drop where n - (1 - 2) > 0"),
    ],
)
def test_a_filter_step_is_titled_with_its_condition(rule: str, title: str) -> None:
    spec = f"""dataset d {{
  source csv("x.csv")
  schema {{
    id: string @id
    t: text
    n: int
  }}
  clean {{ {rule} }}
}}
"""
    result = check_text(spec, "d.fm")
    assert result.ok, result.diagnostics
    steps = lower_dataset(compile_spec(result).datasets[0]).steps
    assert title in [step.title for step in steps]


def test_a_changed_rule_is_named_not_the_whole_list() -> None:
    before = "read csv('x.csv')\ndrop where n < 2\nsplit"
    after = "read csv('x.csv')\ndrop where n < 3\nsplit"
    assert (
        _difference("steps", before, after)
        == "steps changed: `drop where n < 2` → `drop where n < 3`"
    )
    assert _difference("steps", before, before + "\ndedupe t") == "steps changed: `dedupe t` added"
    assert _difference("key", "a", "b") == "key changed: a → b"


def test_a_piped_stage_prints_a_few_plain_lines_not_one_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fmlang.cli import run_display

    monkeypatch.setattr(run_display, "PLAIN_EVERY_S", 0.0)
    out = io.StringIO()
    display = run_display.StageDisplay(console(stream=out), live=False)
    display.begin("train:m")
    display.steps(1000)
    for step in range(1000):
        display.advance(loss=2.0 + 1 / (step + 1) + 1e-9)
    display.end("train:m", ran=True, seconds=61.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train:m" and lines[-1] == "  ran in 1m01s"
    progress = lines[1:-1]
    assert [line.split(",")[0] for line in progress] == [
        "  250/1000 steps",
        "  500/1000 steps",
        "  750/1000 steps",
    ]
    assert progress[0].endswith("loss 2.004")  # rounded


def test_a_failed_stage_says_so() -> None:
    from fmlang.cli.run_display import StageDisplay

    out = io.StringIO()
    display = StageDisplay(console(stream=out), live=False)
    display.begin("data:d")
    display.failed("data:d", 0.25)
    assert out.getvalue() == "data:d\n  stopped after 0.2 s\n"
