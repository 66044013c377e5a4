"""The fitted label model held against majority vote, at run time, so that it never loses to
majority vote by more than noise without an error.

- With gold labels (the dataset's `@gold` column): on the rows with a gold class that the
  label model labels, each row's difference d = [the label model is right] - [majority vote
  is right], majority vote breaking a tie by a fair coin (counted in expectation: 1 / the
  number of tied classes when gold is among them), so that labelling the rows majority vote
  leaves tied is neither free nor penalised. The label model is worse when the summed
  difference falls below minus two standard errors, 2 x sqrt(sum of d^2) (a paired sign
  test, McNemar's where no row ties; about 2.3%, one-sided). Both covered accuracies, with
  majority vote's ties abstaining, are reported too (each on its own covered rows).
- Without gold: the share of the rows where majority vote has a strict winner on which the
  label model picks another class. Above one half (on at least MIN_AGREEMENT_ROWS rows) the
  model explains the votes with something other than the functions' agreement: the
  collapse the label model's constraints exist to prevent.

Either failure is FM0760, an error: the labels stage stops before writing labels (no
silent fallback to majority vote, which the spec did not ask for); the help says how to
switch. Before it does, the model is refitted once with each setting of ALTERNATIVES the
block did not already use, and reviewed the same way: the first that passes is named in the
help with its figures (`alternative`), so the user can adopt a fix that is known to pass
instead of guessing. On the YouTube example's 15 correlated functions the estimated prior
drifts to 71% ham and loses 134.5 gold rows to majority vote; `prior = uniform` loses 7.5,
within the noise bound of 10.1. A fit that ran out of iterations is FM0761 and a collapsed
class prior FM0762, warnings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlang.backends.labelmodel.majority import majority_vote
from fmlang.backends.labelmodel.matrix import ABSTAIN, IntArray, tied_classes, vote_counts
from fmlang.backends.labelmodel.model import LabelModel, fit_label_model
from fmlang.diagnostics import Diagnostic, Span, error, warning

NOISE_BOUND = 2.0
"""Standard errors of the paired difference a loss to majority vote must exceed."""
MIN_AGREEMENT_ROWS = 20
"""Rows with a strict majority-vote winner the gold-free check needs before it is believed."""
MAX_DISAGREEMENT = 0.5
ALTERNATIVES: tuple[dict[str, Any], ...] = ({"prior": "uniform"},)
"""Settings of `model label_model(...)` tried, in order, when a fit is refused."""


@dataclass(frozen=True)
class Review:
    rows: int
    covered: int
    majority_covered: int
    strict_rows: int
    disagreements: int
    gold_rows: int
    accuracy_covered: float | None
    majority_accuracy_covered: float | None
    compared: int
    ours_right: int
    majority_expected: float
    spread: float

    @property
    def disagreement(self) -> float | None:
        return self.disagreements / self.strict_rows if self.strict_rows else None

    @property
    def bound(self) -> float:
        return NOISE_BOUND * math.sqrt(self.spread)

    @property
    def lost(self) -> float:
        """Rows majority vote (coin-flip ties) gets right beyond the label model's."""
        return self.majority_expected - self.ours_right

    @property
    def worse_on_gold(self) -> bool:
        return self.gold_rows > 0 and self.lost > 0 and self.lost > self.bound

    @property
    def contradicts_majority(self) -> bool:
        return (
            self.gold_rows == 0
            and self.strict_rows >= MIN_AGREEMENT_ROWS
            and self.disagreements > MAX_DISAGREEMENT * self.strict_rows
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "covered": self.covered,
            "majority_covered": self.majority_covered,
            "majority_strict_rows": self.strict_rows,
            "disagreements_with_majority": self.disagreements,
            "gold_rows": self.gold_rows,
            "accuracy_covered": self.accuracy_covered,
            "majority_accuracy_covered": self.majority_accuracy_covered,
            "paired": {
                "compared": self.compared,
                "ours_right": self.ours_right,
                "majority_right_expected": self.majority_expected,
                "noise_bound": self.bound,
            },
            "worse_than_majority": self.worse_on_gold or self.contradicts_majority,
            "policy": "covered accuracies: majority vote's ties abstain, each on the rows it "
            "labels; paired: on the gold rows the label model labels, majority vote's ties "
            "broken by a fair coin (in expectation)",
        }


def review(matrix: IntArray, k: int, best: IntArray, gold: IntArray | None) -> Review:
    """`best`: the label model's class per row (-1: no label); `gold`: -1 where unknown."""
    majority = majority_vote(matrix, k, tie="abstain")
    ours_covered = best != ABSTAIN
    mv_covered = majority != ABSTAIN
    strict = mv_covered & ours_covered
    known = np.zeros(len(best), bool) if gold is None else gold != ABSTAIN
    truth = np.full(len(best), ABSTAIN) if gold is None else gold
    compared = ours_covered & known
    ours_right = (best == truth) & compared
    tied = tied_classes(vote_counts(matrix, k))
    gold_tied = tied[np.arange(len(best)), np.where(known, truth, 0)] & known
    mv_expected = np.where(gold_tied, 1.0 / tied.sum(axis=1), 0.0) * compared
    difference = ours_right - mv_expected
    return Review(
        rows=len(best),
        covered=int(ours_covered.sum()),
        majority_covered=int(mv_covered.sum()),
        strict_rows=int(strict.sum()),
        disagreements=int((best[strict] != majority[strict]).sum()),
        gold_rows=int(known.sum()),
        accuracy_covered=_accuracy(best == truth, ours_covered & known),
        majority_accuracy_covered=_accuracy(majority == truth, mv_covered & known),
        compared=int(compared.sum()),
        ours_right=int(ours_right.sum()),
        majority_expected=float(mv_expected.sum()),
        spread=float((difference**2).sum()),
    )


def _accuracy(right: np.ndarray, rows: np.ndarray) -> float | None:
    return float(right[rows].mean()) if rows.any() else None


def fit_lines(model: LabelModel, found: Review) -> list[str]:
    """The run output: coverage, convergence and both accuracies."""
    share = found.covered / found.rows if found.rows else 0.0
    state = "converged" if model.converged else "did NOT converge"
    lines = [
        f"label model: {found.covered} of {found.rows} rows labelled ({100 * share:.1f}%); "
        f"EM {state} after {model.iterations} iterations "
        f"(tolerance {model.tolerance:g}); prior {_prior(model)} ({model.prior_source})"
    ]
    if found.gold_rows:
        lines.append(
            f"accuracy against @gold on labelled rows: label model {_pct(found.accuracy_covered)}"
            f", majority vote {_pct(found.majority_accuracy_covered)} "
            f"(ties abstain; {found.majority_covered} rows labelled)"
        )
    elif found.disagreement is not None:
        lines.append(
            f"no @gold column: the label model agrees with majority vote on "
            f"{_pct(1 - found.disagreement)} of the {found.strict_rows} rows it decides"
        )
    return lines


def _prior(model: LabelModel) -> str:
    return "[" + ", ".join(f"{p:.3f}" for p in model.prior) + "]"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fit_warnings(model: LabelModel, span: Span | None) -> list[Diagnostic]:
    found = []
    if not model.converged:
        found.append(
            warning(
                "FM0761",
                f"the label model did not converge in {model.iterations} EM iterations: a "
                f"row's class probability still moved by {model.last_change:.2g} (tolerance "
                f"{model.tolerance:g})",
                span,
                "stopped at `epochs`",
                help=f"raise `epochs` (now {model.epochs}) or loosen `tolerance` in "
                "`model label_model(...)`",
            )
        )
    if model.prior_source == "majority_vote":
        found.append(
            warning(
                "FM0762",
                "EM's class prior collapsed onto one class; the model was refitted with "
                "majority vote's class mix, " + _prior(model),
                span,
                "prior collapsed",
                help="check the labeling functions of the dropped class, or set `prior = uniform`",
            )
        )
    return found


@dataclass(frozen=True)
class Alternative:
    """Options of `model label_model(...)` whose fit passed the review, and that review."""

    options: dict[str, Any]
    review: Review

    def source(self) -> str:
        settings = ", ".join(f"{k} = {_value(v)}" for k, v in self.options.items())
        return f"model label_model({settings})"


def alternative(matrix: IntArray, k: int, gold: IntArray | None,
                options: dict[str, Any]) -> Alternative | None:  # fmt: skip
    """The block's `options` with the first setting of ALTERNATIVES they do not already
    hold whose fit is not worse than majority vote; None when there is none."""
    for change in ALTERNATIVES:
        if all(options.get(key) == value for key, value in change.items()):
            continue
        tried = {**options, **change}
        model = fit_label_model(matrix, k, **tried)
        found = review(matrix, k, model.label(matrix), gold)
        if not (found.worse_on_gold or found.contradicts_majority):
            return Alternative(tried, found)
    return None


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def worse_error(found: Review, labels: str, span: Span | None,
                passing: Alternative | None = None) -> Diagnostic | None:  # fmt: skip
    """FM0760 when the label model loses to majority vote beyond noise, else None; its help
    names `passing`, a setting known to pass, where there is one."""
    if found.worse_on_gold:
        what = (
            f"the label model of `{labels}` is worse than majority vote against @gold: "
            f"covered accuracy {_pct(found.accuracy_covered)} vs "
            f"{_pct(found.majority_accuracy_covered)}; on the {found.compared} gold rows it "
            f"labels it is right on {found.ours_right}, majority vote (ties by coin flip) on "
            f"{found.majority_expected:.1f}, {found.lost:.1f} more (noise bound "
            f"{found.bound:.1f})"
        )
    elif found.contradicts_majority:
        what = (
            f"the label model of `{labels}` contradicts majority vote on "
            f"{found.disagreements} of the {found.strict_rows} rows where majority vote has "
            "a strict winner"
        )
    else:
        return None
    fix = (
        "fix or remove the labeling functions the analysis table flags (duplicated, "
        "correlated or worse than chance), or combine the votes with `model majority`"
    )
    if passing is not None:
        fix = f"`{passing.source()}` passes this check ({_passes(passing.review)}); or " + fix
    return error("FM0760", what, span, "worse than majority vote", help=fix)


def _passes(found: Review) -> str:
    if found.gold_rows:
        return (
            f"covered accuracy {_pct(found.accuracy_covered)}, {found.lost:.1f} gold rows "
            f"behind majority vote within the noise bound of {found.bound:.1f}"
            if found.lost > 0
            else f"covered accuracy {_pct(found.accuracy_covered)}, level with majority vote "
            "or ahead"
        )
    agreement = _pct(1 - (found.disagreement or 0.0))
    return f"it agrees with majority vote on {agreement} of the {found.strict_rows} rows it decides"
