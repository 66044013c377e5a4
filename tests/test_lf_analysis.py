"""LF analysis: coverage, overlaps, conflicts and accuracy on a hand-computed matrix;
warnings for a never-firing LF, an inverted LF (with gold) and a contrarian one (without)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmlang.backends.labelmodel import lf_summary
from fmlang.diagnostics import Severity, Span

# rows x LFs a, b, c, d (d never fires)
L = np.array(
    [
        [0, 0, -1, -1],  # a, b agree
        [0, 1, -1, -1],  # a, b conflict
        [-1, 1, 1, -1],  # b, c agree
        [1, -1, -1, -1],  # a alone
        [-1, -1, -1, -1],  # nobody
        [-1, -1, 0, -1],  # c alone
    ]
)
GOLD = np.array([0, 1, 1, 0, 1, -1])
NAMES = ["a", "b", "c", "d"]


def test_hand_computed_numbers() -> None:
    summary = lf_summary(L, NAMES, 2, gold=GOLD, classes=["ham", "spam"])
    a, b, c, d = summary.lfs
    assert (a.fires, a.coverage, a.overlaps, a.conflicts) == (3, 3 / 6, 2 / 6, 1 / 6)
    assert (b.fires, b.coverage, b.overlaps, b.conflicts) == (3, 3 / 6, 3 / 6, 1 / 6)
    assert (c.fires, c.coverage, c.overlaps, c.conflicts) == (2, 2 / 6, 1 / 6, 0.0)
    assert (d.fires, d.coverage, d.polarity) == (0, 0.0, ())
    assert a.polarity == (0, 1) and b.polarity == (0, 1) and c.polarity == (0, 1)
    # a: rows 0 (0 vs 0 right), 1 (0 vs 1 wrong), 3 (1 vs 0 wrong)
    assert (a.correct, a.incorrect, a.accuracy) == (1, 2, 1 / 3)
    # c: row 2 right, row 5 has no gold
    assert (c.correct, c.incorrect, c.accuracy) == (1, 0, 1.0)
    # chance for a: votes 2/3 class 0, 1/3 class 1; gold rows 2/5 class 0, 3/5 class 1
    assert a.chance == pytest.approx(2 / 3 * 2 / 5 + 1 / 3 * 3 / 5)
    # a agrees with b on row 0, not on row 1
    assert (a.agreement, a.agreement_rows) == (0.5, 2)
    assert (summary.covered_rows, summary.overlap_rows, summary.conflict_rows) == (5, 3, 1)
    assert summary.coverage == 5 / 6 and summary.conflicts == 1 / 6


def test_json_and_table() -> None:
    summary = lf_summary(L, NAMES, 2, gold=GOLD, learned_accuracy=[0.9, 0.8, 0.7, 0.5])
    document = summary.to_json()
    assert json.loads(json.dumps(document, sort_keys=True)) == document
    assert document["totals"]["covered_rows"] == 5
    assert [lf["name"] for lf in document["lfs"]] == NAMES
    assert document["lfs"][0]["learned_accuracy"] == 0.9
    table = summary.table()
    assert table.row_count == len(NAMES) + 1
    assert [column.header for column in table.columns][-1] == "learned acc."


def test_never_firing_lf_warns_at_its_span() -> None:
    span = Span("spam.fm", 12, 3, 12, 40)
    summary = lf_summary(L, NAMES, 2, spans={"d": span, "a": None})
    never = [w for w in summary.warnings if w.code == "FM0750"]
    assert len(never) == 1 and "`d`" in never[0].message
    assert never[0].severity is Severity.WARNING
    assert never[0].primary_span == span


def _with_adversary(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three decent LFs and a fourth that votes the opposite of the truth 95% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=400)
    columns = []
    for accuracy in (0.85, 0.8, 0.75, 0.05):
        fires = rng.random(400) < 0.6
        vote = np.where(rng.random(400) < accuracy, y, 1 - y)
        columns.append(np.where(fires, vote, -1))
    return np.stack(columns, axis=1), y


def test_inverted_lf_warns_with_gold() -> None:
    matrix, y = _with_adversary(0)
    summary = lf_summary(matrix, ["g1", "g2", "g3", "bad"], 2, gold=y)
    assert [(w.code, "`bad`" in w.message) for w in summary.warnings] == [("FM0751", True)]


def test_contrarian_lf_warns_without_gold() -> None:
    matrix, _ = _with_adversary(1)
    summary = lf_summary(matrix, ["g1", "g2", "g3", "bad"], 2)
    assert [(w.code, "`bad`" in w.message) for w in summary.warnings] == [("FM0752", True)]


def test_good_lfs_do_not_warn() -> None:
    matrix, y = _with_adversary(2)
    summary = lf_summary(matrix[:, :3], ["g1", "g2", "g3"], 2, gold=y)
    assert summary.warnings == ()
    assert lf_summary(matrix[:, :3], ["g1", "g2", "g3"], 2).warnings == ()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="names"):
        lf_summary(L, NAMES[:2], 2)
    with pytest.raises(ValueError, match="gold"):
        lf_summary(L, NAMES, 2, gold=[0, 1])
