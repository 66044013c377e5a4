"""Scoring, pruning and greedy selection of candidate labeling functions.

Inputs: `fires`, a boolean matrix (every row of the labelled data x candidates), and the
sample: row indices with their gold class, split by the seed into two halves (`fit` and
`held`). For each candidate:

- its class is the gold class most common where it fires on the whole sample, and it is
  dropped when its record there refutes a precision of MIN_ACCURACY: when a function right
  on 90% of its rows would be right on so few of them less than CONTRADICTED of the time.
  (Such a function is wrong on 2 or more of 10 a quarter of the time. A plain 90% cut dropped
  `words_under_12_unless_spam`, right on 16 of the 20 rows where it fired in seed 6's sample
  of WRENCH's YouTube train split: it covers 37% of the rows at 0.88 on their gold labels);
- when its precision can be estimated on every row of the data (`estimate.py`), the
  estimate must reach MIN_ESTIMATE, and one sample row suffices to give it a class; a
  candidate that fires on no sample row takes the class its estimate puts at
  MIN_ESTIMATE or more, by that class's own detector (`visit` and `website`, estimated
  1.00 for spam on WRENCH's YouTube train split, measured 1.00 on its gold labels, fired on
  none of seed 0's 50 rows). Through the other class's detector ("spam's functions do not
  fire here, so ham") such candidates were wrong (`up if`, 1.00 estimated as ham, 0.40
  measured: "thumbs up if…" is spam the detector misses);
- an estimate the sample refutes is set aside and the sample decides as if there were none:
  when a function of the estimated precision would be right on as many of its sample rows
  less often than CONTRADICTED (one-sided binomial tail). The estimate assumes the
  detector fires as often on the candidate's rows of its class as on the class's sample
  rows; a candidate that covers a kind of the class the detector's functions miss breaks
  that, and its estimate runs low (`check`, 9 of 9 sample rows right, was estimated 0.35
  on WRENCH's YouTube split with seed 1, and is right on 0.97 of its gold labels);
- otherwise it must fire on at least `min_support` sample rows, its accuracy's Wilson lower
  bound (z = 1.645, one-sided 95%) must beat chance (the class's share of the sample), and,
  against overfitting one half, a keyword or prefix must fire on each half and be right on
  most of the rows where it fires there (among hundreds of keywords, some are right by luck
  on a few rows of one half; they rarely are on the other). The shapes and word counts are
  a few dozen, not hundreds, and are exempt: `words_under_5_no_link_unless_spam`, right on
  seed 0's 4 sample rows where it fired, all in one half, covers 15% of WRENCH's YouTube
  train split at 0.97 on its gold labels;
- coverage is measured on every row of the labelled data, gold or not.

Selection is greedy per class (Reef's accuracy-and-diversity trade-off): the next function
maximises (precision - chance) x (new coverage + OVERLAP_CREDIT x coverage already had),
scaled down by its largest Jaccard overlap with a function already chosen (none above
MAX_OVERLAP), until `per_class` are chosen or none newly covers MIN_GAIN of the rows. The
precision is the estimate where there is one, else the lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fmlang.backends.labelsuggest.candidates import Candidate

Z = 1.645
OVERLAP_CREDIT = 0.1
MIN_GAIN = 0.002
MAX_OVERLAP = 0.8
MIN_ACCURACY = 0.9
"""The precision a candidate's sample record must not refute."""
SHAPELY = ("shape", "length")
"""Candidate kinds few enough to need no check against overfitting one half of the sample."""
MIN_ESTIMATE = 0.9
"""The least estimated precision a candidate with an estimate must reach."""
CONTRADICTED = 0.05
"""An estimate under which the sample's record is less likely than this is set aside."""

Estimate = Callable[[int, int], "float | None"]
"""(candidate's column, class) -> its precision for that class estimated on every row."""


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    column: int  # the candidate's column in `fires`
    target: int  # class index
    fit_correct: int
    fit_fires: int
    held_correct: int
    held_fires: int
    lower_bound: float
    chance: float  # the target class's share of the sample
    coverage: float  # on every row of the labelled data
    estimate: float | None = None  # precision estimated on every row (estimate.py)

    @property
    def precision(self) -> float:
        """What selection weighs: the estimate where there is one, else the lower bound."""
        return self.lower_bound if self.estimate is None else self.estimate

    @property
    def correct(self) -> int:
        return self.fit_correct + self.held_correct

    @property
    def fires(self) -> int:
        return self.fit_fires + self.held_fires


def wilson_lower(correct: int, n: int, z: float = Z) -> float:
    if n == 0:
        return 0.0
    p = correct / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


def contradicted(correct: int, n: int, estimated: float) -> bool:
    """Whether being right on `correct` or more of `n` sample rows is less likely than
    CONTRADICTED for a function of precision `estimated` (one-sided binomial tail)."""
    return _binomial(range(correct, n + 1), n, estimated) < CONTRADICTED


def refuted(correct: int, n: int, precision: float) -> bool:
    """Whether being right on `correct` or fewer of `n` sample rows is less likely than
    CONTRADICTED for a function of precision `precision` (the other tail)."""
    return _binomial(range(correct + 1), n, precision) < CONTRADICTED


def _binomial(counts: range, n: int, p: float) -> float:
    """P(the number right is in `counts`) for `n` rows each right with probability `p`."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in counts)


def sample_halves(gold_rows: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` of the gold rows drawn with the seed, split into (fit, held out) halves."""
    rng = np.random.default_rng(seed)
    drawn = rng.permutation(np.sort(gold_rows))[:size]
    half = (len(drawn) + 1) // 2
    return drawn[:half], drawn[half:]


def score(candidates: list[Candidate], fires: np.ndarray, gold: np.ndarray, fit: np.ndarray,
          held: np.ndarray, k: int, min_support: int, estimate: Estimate | None = None,
          needs_estimate: frozenset[int] = frozenset(),
          unseen: Estimate | None = None) -> list[Scored]:  # fmt: skip
    """The candidates that survive pruning, scored. `gold[i]` is row i's class (-1: none);
    `estimate`, where given, measures a candidate's precision on every row; the candidates
    at the columns `needs_estimate` are dropped without one. `unseen`, where given,
    measures it for a candidate no sample row sees, by evidence for the class itself (not
    "the other class's functions do not fire here")."""
    sample = np.concatenate([fit, held])
    share = np.bincount(gold[sample], minlength=k) / max(1, len(sample))
    coverage = fires.mean(axis=0) if len(fires) else np.zeros(len(candidates))
    out = []
    for j, candidate in enumerate(candidates):
        votes = gold[sample][fires[sample, j]]
        if len(votes) == 0:
            found = _unseen(candidate, j, share, float(coverage[j]), unseen)
            out.extend([found] if found is not None else [])
            continue
        counts = np.bincount(votes, minlength=k)
        target = int(np.argmax(counts))  # ties: the lower class index, deterministic
        if refuted(int(counts[target]), len(votes), MIN_ACCURACY):
            continue
        bound = wilson_lower(int(counts[target]), len(votes))
        halves = [gold[half][fires[half, j]] for half in (fit, held)]
        right = [int((h == target).sum()) for h in halves]
        estimated = estimate(j, target) if estimate is not None else None
        if estimated is not None and contradicted(int(counts[target]), len(votes), estimated):
            estimated = None  # the sample refutes the estimate's assumption: it decides
        halves_agree = candidate.kind in SHAPELY or all(
            len(h) > 0 and r * 2 > len(h) for h, r in zip(halves, right, strict=True)
        )  # a keyword is right on most of its rows in each half
        confirmed = len(votes) >= min_support and bound > share[target] and halves_agree
        if estimated is None:
            if not confirmed or j in needs_estimate:
                continue
        elif estimated < MIN_ESTIMATE:
            continue
        chance, covers = float(share[target]), float(coverage[j])
        out.append(Scored(candidate, j, target, right[0], len(halves[0]), right[1],
                          len(halves[1]), bound, chance, covers, estimated))  # fmt: skip
    return out


def _unseen(candidate: Candidate, j: int, share: np.ndarray, coverage: float,
            estimate: Estimate | None) -> Scored | None:  # fmt: skip
    """A candidate that fires on no sample row, scored for the class its estimate puts at
    MIN_ESTIMATE or more, if one does."""
    if estimate is None:
        return None
    for target in range(len(share)):
        estimated = estimate(j, target)
        if estimated is not None and estimated >= MIN_ESTIMATE:
            return Scored(candidate, j, target, 0, 0, 0, 0, 0.0, float(share[target]), coverage,
                          estimated)  # fmt: skip
    return None


def choose(scored: list[Scored], fires: np.ndarray, k: int, per_class: int) -> list[Scored]:
    """Greedy per class; the result is ordered by class, then by the order chosen. Stops
    for a class when the best candidate's new coverage is under MIN_GAIN."""
    columns = {s.candidate.name: fires[:, s.column] for s in scored}
    chosen: list[Scored] = []
    for target in range(k):
        pool = sorted((s for s in scored if s.target == target), key=lambda s: s.candidate.name)
        covered = np.zeros(len(fires), dtype=bool)
        mine: list[Scored] = []
        while pool and len(mine) < per_class:
            best, new = _best(pool, mine, covered, columns)
            if best is None or new < MIN_GAIN:
                break
            mine.append(best)
            covered |= columns[best.candidate.name]
            pool.remove(best)
        chosen.extend(mine)
    return chosen


def _best(pool: list[Scored], mine: list[Scored], covered: np.ndarray,
          columns: dict[str, np.ndarray]) -> tuple[Scored | None, float]:  # fmt: skip
    """The most valuable candidate and the share of rows it newly covers."""
    rows = max(1, len(covered))
    best, best_value, best_new = None, 0.0, 0.0
    for s in pool:
        column = columns[s.candidate.name]
        new = float((column & ~covered).sum()) / rows
        old = float((column & covered).sum()) / rows
        overlap = max((_jaccard(column, columns[m.candidate.name]) for m in mine), default=0.0)
        if overlap > MAX_OVERLAP:
            continue
        value = (s.precision - s.chance) * (new + OVERLAP_CREDIT * old) * (1.0 - overlap)
        if value > best_value:
            best, best_value, best_new = s, value, new
    return best, best_new


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0
