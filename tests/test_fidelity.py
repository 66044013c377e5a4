"""The public measured runs under tests/fidelity/: every case verifies, every verdict agrees
with what happened (none says "fits" for a run that ran out of memory), and no budget for a
packed run falls more than 20% below its measurement (`benchmarks/fidelity.py` prints them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlang.verify.fidelity import Scored, cases, score, summarise

FOLDER = Path(__file__).parent / "fidelity"


@pytest.fixture(scope="module")
def scored() -> list[Scored]:
    return [score(case) for case in cases(FOLDER)]


def test_every_case_verifies(scored: list[Scored]) -> None:
    assert len(scored) >= 40
    assert [s.case.id for s in scored if s.error] == []


def test_verdicts_agree_and_nothing_falsely_fits(scored: list[Scored]) -> None:
    summary = summarise(scored)
    assert summary.false_fits == 0
    assert summary.agree == summary.total


def test_memory_budgets_are_not_far_below_the_runs(scored: list[Scored]) -> None:
    memory = [s for s in scored if s.case.metric != "decode" and s.ratio is not None]
    low = [(s.case.id, round(s.ratio or 0, 2)) for s in memory if not s.case.upper_bound]
    assert all(ratio >= 0.8 for _, ratio in low), low
