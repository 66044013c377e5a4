"""A candidate's precision estimated on every row of the data, gold or not.

Fifty gold rows cannot tell a keyword right 70% of the time from one right 95% of the time:
both are right on the three or four sample rows where they fire. The unlabelled rows can,
through a detector: the functions already chosen for a class c that were right on every
sample row where they fired (keywords and shapes; length thresholds, which share no words
with the candidates, are left out). The sample measures the detector's rate on class c,
`recall`, and on the other classes, `false_rate`. If a candidate's rows are a mix with a share
q of class c, the detector fires on a share  d = q x recall + (1 - q) x false_rate  of them,
so (Rogan and Gladen's correction of an imperfect test)

    q = (d - false_rate) / (recall - false_rate).

It assumes the detector fires on a class-c row whether the candidate does or not. A candidate
that is one of the detector's functions, or restricts one, is measured without it, and the
detector's rates are measured again on the sample without it. A candidate that nests with a
detector function (`pre_yout` beside `pre_youtub`) is measured with it, and its estimate runs
high: leaving such functions out too was tried, and the estimates of the keywords of one
kind of spam (`check`, which few other spam functions share rows with) fell below the
threshold, the suggestions lost them, and coverage of the train split fell from 85% to 68%
(seeds 0-7, majority vote; measured with a script that was not kept). With two classes,
1 - q is the precision of a candidate for the other class. A detector whose recall is not
MIN_SEPARATION above its false rate is too weak to estimate with, as is a candidate that
excludes the detector's rows by construction (`Candidate.unless`).

On the YouTube example (`benchmarks/label_suggest.py --estimates --seeds 8`: seeds 0-7, 50
rows each), of the second round's candidates kept with an estimate, 1,394 of 1,512 for spam
(867 before candidates no sample row sees could be kept) and 65 of 69 for ham were within
0.1 of the precision measured on all 1,409 gold labels (median error 0.011 and 0.018). The
worst were nested with a first-round keyword right by luck on its sample rows: `pre_emin`
(1.00 estimated, 0.45 measured) beside `kw_eminem`, itself measured at 0.49; and `every`
(1.00, 0.41), which no sample row saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmlang.backends.labelsuggest.candidates import Candidate

MIN_SEPARATION = 0.4
"""The least recall - false_rate a detector needs."""


@dataclass(frozen=True)
class Detector:
    """Class `target`'s detector: its functions' columns in `fires` and their names, and the
    sample's rows of that class (`own`) and of the others (`other`)."""

    target: int
    columns: tuple[int, ...]
    names: tuple[str, ...]
    own: np.ndarray
    other: np.ndarray

    def rates(self, fired: np.ndarray) -> tuple[float, float] | None:
        """(recall, false rate) on the sample, smoothed, of a detector firing on `fired`;
        None when they are not MIN_SEPARATION apart."""
        recall = (fired[self.own].sum() + 0.5) / (len(self.own) + 1)
        false_rate = (fired[self.other].sum() + 0.5) / (len(self.other) + 1)
        if recall - false_rate < MIN_SEPARATION:
            return None
        return float(recall), float(false_rate)


def detector(target: int, members: Sequence[tuple[Candidate, int]], fires: np.ndarray,
             gold: np.ndarray, sample: np.ndarray) -> Detector | None:  # fmt: skip
    """Class `target`'s detector from `members` (candidates chosen for it that were right on
    every sample row they fired on, with their columns), or None when it is too weak."""
    kept = [(c, j) for c, j in members if c.regex is not None]
    if not kept:
        return None
    columns, names = tuple(j for _, j in kept), tuple(c.name for c, _ in kept)
    own, other = sample[gold[sample] == target], sample[gold[sample] != target]
    found = Detector(target, columns, names, own, other)
    fired = np.asarray(fires[:, list(columns)].any(axis=1))
    return found if found.rates(fired) is not None else None


def precision(candidate: Candidate, column: np.ndarray, target: int,
              detectors: dict[int, Detector], fires: np.ndarray, labels: Sequence[str],
              own_only: bool = False) -> float | None:  # fmt: skip
    """The estimated share of `target` among the rows where `column` (the candidate's
    firing rows) holds: from the target's own detector, or with two classes (unless
    `own_only`) from the other class's; None when neither can measure it."""
    order = [target] + ([1 - target] if len(labels) == 2 and not own_only else [])
    for u in order:
        found = detectors.get(u)
        if found is None or candidate.unless == labels[u]:
            continue
        share = _share(found, candidate, column, fires)
        if share is not None:
            return share if u == target else 1.0 - share
    return None


def _share(found: Detector, candidate: Candidate, column: np.ndarray,
           fires: np.ndarray) -> float | None:  # fmt: skip
    """The estimated share of the detector's class among `column`'s rows, by the detector
    without the candidate itself; None where it cannot tell."""
    columns = [j for j, name in zip(found.columns, found.names, strict=True)
               if name not in (candidate.name, candidate.root)]  # fmt: skip
    if not columns or not column.any():
        return None
    fired = np.asarray(fires[:, columns].any(axis=1))
    rates = found.rates(fired)
    if rates is None:
        return None
    recall, false_rate = rates
    q = (float(fired[column].mean()) - false_rate) / (recall - false_rate)
    return min(1.0, max(0.0, q))
