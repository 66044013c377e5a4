"""Snorkel-style labeling-function analysis: per LF coverage, overlaps, conflicts, polarity
and (where gold labels exist) empirical accuracy; totals over the whole set; warnings for
LFs that never fire, are less accurate than chance, or mostly contradict the others.

Definitions (fractions are of all rows, as in Snorkel's `LFAnalysis`):

- coverage: the LF votes; overlaps: it votes and at least one other LF votes; conflicts: it
  votes and at least one other LF votes a different class.
- accuracy: correct / (correct + incorrect) over rows with a gold label (gold -1 = unknown).
  chance: the accuracy votes independent of the label would get with the same vote mix,
  sum over classes c of (share of the LF's votes that are c) x (share of gold rows in c).
- agreement: on rows where it votes and the other LFs' majority is one class (no tie),
  how often its vote is that class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from fmlang.backends.labelmodel.matrix import ABSTAIN, FloatArray, IntArray, check_matrix
from fmlang.diagnostics import Diagnostic, Span, warning

MIN_EVIDENCE_ROWS = 5
"""Rows an accuracy or agreement warning needs before it is believed."""
CONTRARIAN_AGREEMENT = 0.25
"""Without gold, an LF that agrees with the others' majority on fewer than this share of the
rows where they decide is reported. Not 0.5: single-polarity LF sets disagree by
construction (on WRENCH YouTube the 94%-accurate `keyword_link` agrees on 27% of them)."""


@dataclass(frozen=True)
class LFStats:
    name: str
    polarity: tuple[int, ...]
    fires: int
    coverage: float
    overlaps: float
    conflicts: float
    agreement: float | None
    agreement_rows: int
    correct: int | None = None
    incorrect: int | None = None
    accuracy: float | None = None
    chance: float | None = None
    learned_accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "polarity": list(self.polarity),
            "fires": self.fires,
            "coverage": self.coverage,
            "overlaps": self.overlaps,
            "conflicts": self.conflicts,
            "agreement": self.agreement,
            "agreement_rows": self.agreement_rows,
            "correct": self.correct,
            "incorrect": self.incorrect,
            "accuracy": self.accuracy,
            "chance": self.chance,
            "learned_accuracy": self.learned_accuracy,
        }


@dataclass(frozen=True)
class LFSummary:
    """The analysis of one label matrix: per-LF stats, totals and warnings."""

    rows: int
    k: int
    classes: tuple[str, ...]
    lfs: tuple[LFStats, ...]
    covered_rows: int
    overlap_rows: int
    conflict_rows: int
    warnings: tuple[Diagnostic, ...]

    @property
    def coverage(self) -> float:
        return _share(self.covered_rows, self.rows)

    @property
    def conflicts(self) -> float:
        return _share(self.conflict_rows, self.rows)

    @property
    def overlaps(self) -> float:
        return _share(self.overlap_rows, self.rows)

    def to_json(self) -> dict[str, Any]:
        totals = {
            "rows": self.rows,
            "covered_rows": self.covered_rows,
            "coverage": self.coverage,
            "overlap_rows": self.overlap_rows,
            "overlaps": self.overlaps,
            "conflict_rows": self.conflict_rows,
            "conflicts": self.conflicts,
        }
        return {
            "k": self.k,
            "classes": list(self.classes),
            "totals": totals,
            "lfs": [lf.to_json() for lf in self.lfs],
            "warnings": [d.to_json() for d in self.warnings],
        }

    def table(self) -> Table:
        """The per-LF numbers as a rich table, one row per LF and a totals row."""
        with_gold = any(lf.accuracy is not None for lf in self.lfs)
        with_learned = any(lf.learned_accuracy is not None for lf in self.lfs)
        table = Table(title=f"labeling functions ({self.rows} rows)")
        for column in _columns(with_gold, with_learned):
            table.add_column(column, justify="left" if column in ("LF", "polarity") else "right")
        for lf in self.lfs:
            table.add_row(*self._row(lf, with_gold, with_learned))
        blanks = [""] * ((3 if with_gold else 0) + (1 if with_learned else 0) + 1)
        table.add_row(
            "all",
            "",
            _pct(self.coverage),
            _pct(self.overlaps),
            _pct(self.conflicts),
            *blanks,
            end_section=True,
        )
        return table

    def _row(self, lf: LFStats, with_gold: bool, with_learned: bool) -> list[str]:
        cells = [lf.name, ", ".join(self.classes[c] for c in lf.polarity) or "-"]
        cells += [_pct(lf.coverage), _pct(lf.overlaps), _pct(lf.conflicts)]
        cells.append(_pct(lf.agreement))
        if with_gold:
            cells += [str(lf.correct), str(lf.incorrect), _pct(lf.accuracy)]
        if with_learned:
            cells.append(_pct(lf.learned_accuracy))
        return cells


def _columns(with_gold: bool, with_learned: bool) -> list[str]:
    columns = ["LF", "polarity", "coverage", "overlaps", "conflicts", "agrees"]
    if with_gold:
        columns += ["correct", "incorrect", "emp. acc."]
    if with_learned:
        columns.append("learned acc.")
    return columns


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def lf_summary(
    L: object,
    names: Sequence[str],
    k: int,
    gold: object | None = None,
    spans: Mapping[str, Span | None] | None = None,
    *,
    classes: Sequence[str] | None = None,
    learned_accuracy: Sequence[float] | None = None,
) -> LFSummary:
    """Analyse label matrix `L` whose columns are the LFs `names`. `gold` (rows,) holds
    the true class per row or -1 where unknown; `spans` maps LF names to where they are
    written, for the warnings; `learned_accuracy` (one per LF, e.g. `LabelModel.weights()`)
    is shown beside the empirical accuracy."""
    matrix = check_matrix(L, k)
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{len(names)} LF names for a matrix of {matrix.shape[1]} columns")
    labels = tuple(classes) if classes is not None else tuple(str(c) for c in range(k))
    truth = None if gold is None else _check_gold(gold, matrix.shape[0], k)
    learned = list(learned_accuracy) if learned_accuracy is not None else [None] * len(names)
    stats = tuple(_lf_stats(matrix, j, name, k, truth, learned[j]) for j, name in enumerate(names))
    counts = _class_vote_counts(matrix, k)
    voted = (counts > 0).sum(axis=1)
    return LFSummary(
        rows=matrix.shape[0],
        k=k,
        classes=labels,
        lfs=stats,
        covered_rows=int((voted > 0).sum()),
        overlap_rows=int(((matrix != ABSTAIN).sum(axis=1) > 1).sum()),
        conflict_rows=int((voted > 1).sum()),
        warnings=tuple(_warnings(stats, labels, spans or {}, matrix.shape[0])),
    )


def _check_gold(gold: object, rows: int, k: int) -> IntArray:
    truth = np.asarray(gold).astype(np.int64)
    if truth.shape != (rows,):
        raise ValueError(f"gold must have shape ({rows},), got {truth.shape}")
    if ((truth < ABSTAIN) | (truth >= k)).any():
        raise ValueError(f"gold labels must be -1 (unknown) or 0..{k - 1}")
    return truth


def _class_vote_counts(matrix: IntArray, k: int) -> IntArray:
    return np.stack([(matrix == c).sum(axis=1) for c in range(k)], axis=1).astype(np.int64)


def _lf_stats(
    matrix: IntArray, j: int, name: str, k: int, truth: IntArray | None, learned: float | None
) -> LFStats:
    column = matrix[:, j]
    fires = column != ABSTAIN
    others = np.delete(matrix, j, axis=1)
    other_counts = _class_vote_counts(others, k)
    overlaps = fires & (other_counts.sum(axis=1) > 0)
    own = np.where(fires, column, 0)
    differ = other_counts.sum(axis=1) - other_counts[np.arange(len(column)), own]
    agreement, agreement_rows = _agreement(column, fires, other_counts)
    rows = len(column)
    return LFStats(
        name=name,
        polarity=tuple(int(c) for c in np.unique(column[fires])),
        fires=int(fires.sum()),
        coverage=_share(int(fires.sum()), rows),
        overlaps=_share(int(overlaps.sum()), rows),
        conflicts=_share(int((fires & (differ > 0)).sum()), rows),
        agreement=agreement,
        agreement_rows=agreement_rows,
        learned_accuracy=None if learned is None else float(learned),
        **_gold_stats(column, fires, truth, k),
    )


def _agreement(
    column: IntArray, fires: np.ndarray[Any, np.dtype[np.bool_]], other_counts: IntArray
) -> tuple[float | None, int]:
    """How often the LF's vote is the others' strict majority class, and on how many rows."""
    best = other_counts.max(axis=1)
    decided = fires & (best > 0) & ((other_counts == best[:, None]).sum(axis=1) == 1)
    if not decided.any():
        return None, 0
    majority = other_counts.argmax(axis=1)
    agree = int((column[decided] == majority[decided]).sum())
    return agree / int(decided.sum()), int(decided.sum())


def _gold_stats(
    column: IntArray, fires: np.ndarray[Any, np.dtype[np.bool_]], truth: IntArray | None, k: int
) -> dict[str, Any]:
    if truth is None:
        return {}
    known = fires & (truth != ABSTAIN)
    correct = int((column[known] == truth[known]).sum())
    incorrect = int(known.sum()) - correct
    return {
        "correct": correct,
        "incorrect": incorrect,
        "accuracy": correct / (correct + incorrect) if correct + incorrect else None,
        "chance": _chance(column[known], truth[truth != ABSTAIN], k),
    }


def _chance(votes: IntArray, truth: IntArray, k: int) -> float | None:
    if not len(votes) or not len(truth):
        return None
    vote_mix: FloatArray = np.bincount(votes, minlength=k) / len(votes)
    class_mix: FloatArray = np.bincount(truth, minlength=k) / len(truth)
    return float(vote_mix @ class_mix)


def _warnings(
    stats: tuple[LFStats, ...],
    classes: tuple[str, ...],
    spans: Mapping[str, Span | None],
    rows: int,
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for lf in stats:
        span = spans.get(lf.name)
        if lf.fires == 0:
            found.append(_never_fires(lf, span, rows))
        elif _below_chance(lf):
            found.append(_inaccurate(lf, span))
        elif lf.accuracy is None and _contrarian(lf):
            found.append(_disagrees(lf, span))
    return found


def _below_chance(lf: LFStats) -> bool:
    judged = (lf.correct or 0) + (lf.incorrect or 0)
    return (
        lf.accuracy is not None
        and lf.chance is not None
        and judged >= MIN_EVIDENCE_ROWS
        and lf.accuracy < lf.chance
    )


def _contrarian(lf: LFStats) -> bool:
    return (
        lf.agreement is not None
        and lf.agreement_rows >= MIN_EVIDENCE_ROWS
        and lf.agreement < CONTRARIAN_AGREEMENT
    )


def _never_fires(lf: LFStats, span: Span | None, rows: int) -> Diagnostic:
    return warning(
        "FM0750",
        f"labeling function `{lf.name}` never fires on the {rows} rows it was applied to",
        span,
        "votes on no row",
        help="check its pattern against a few rows of the data, or remove it",
    )


def _inaccurate(lf: LFStats, span: Span | None) -> Diagnostic:
    judged = (lf.correct or 0) + (lf.incorrect or 0)
    return warning(
        "FM0751",
        f"labeling function `{lf.name}` is right on {lf.correct} of the {judged} gold rows "
        f"it votes on ({_pct(lf.accuracy)}), below the {_pct(lf.chance)} that votes "
        "unrelated to the label would get",
        span,
        "less accurate than chance",
        help="its vote may be inverted (`-> ham` where `-> spam` was meant), or its "
        "pattern matches the other class; fix it or remove it",
    )


def _disagrees(lf: LFStats, span: Span | None) -> Diagnostic:
    return warning(
        "FM0752",
        f"labeling function `{lf.name}` disagrees with the majority of the other labeling "
        f"functions on {_pct(1 - (lf.agreement or 0.0))} of the {lf.agreement_rows} rows "
        "where they decide",
        span,
        "contradicts the other labeling functions",
        help="check its target class; with gold labels the analysis shows its accuracy",
    )
