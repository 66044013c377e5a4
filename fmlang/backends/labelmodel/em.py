"""Expectation–maximisation for the Dawid–Skene label model.

The generative model: a row's true class y is drawn from a class prior, then every
labeling function j independently emits a vote v (one of the k classes, or abstain) with
probability theta[j, y, v]. Two kinds of LF are told apart by what they ever vote:

- a single-polarity LF (it only ever votes one class, as keyword LFs do) carries its
  signal in *when* it fires, so its firing rate depends on the class: theta[j, y, v] is
  free, abstention included;
- an LF that votes two or more classes fires with a propensity that does not depend on
  the class (as in data programming, Ratner et al. 2016), and its vote, once it fires,
  follows a class-conditional confusion matrix: theta[j, y, v] = fire_j * A_j[y, v]. Letting
  its firing depend on the class as well lets the latent classes drift to clusters of
  firing patterns (rows where many LFs fire vs. few) on small imbalanced samples, whose
  likelihood is higher than the true labels' and whose accuracy is below chance.

Identifiability ("better than chance", Dawid–Skene and Snorkel practice): after every
M-step an LF's vote v may not be more likely under another class than under v itself
(the M-step is projected onto that set by pooling the offending classes' counts), so the
swapped solution is excluded. `constrained=False` lifts it for sets that knowingly hold
worse-than-chance LFs.

Dependencies: the model assumes LFs independent given the class, and duplicated or
near-copied LFs (the same regex twice, a keyword and its plural) would count as
independent evidence and carry the fit (on benchmarks/label_model_random.py, 9 of 100
matrices 13-49 points under majority vote). LFs whose same-class votes overlap on at
least DEPENDENT_JACCARD of the rows where either votes are grouped, and each LF's term in
the likelihood is weighted by 1 / its group's size (`dependency_weights`).

EM starts from the majority-vote posteriors (rows with no vote start at majority vote's
class mix), alternates a smoothed M-step (`smoothing` pseudo-counts per cell) with an
E-step over the whole likelihood, re-estimates the class prior in every M-step under a
Dirichlet prior centred on majority vote's class mix (when asked to), and stops once no row's
class probability moves by more than `tolerance`, or reports that it did not.

Speed: identical rows are fitted once, weighted by how often they occur, and only the
cells where an LF voted are visited (abstentions enter through per-class totals), with
`np.bincount` as the sparse product: one iteration is O(distinct rows x k + votes x k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmlang.backends.labelmodel.matrix import ABSTAIN, FloatArray, IntArray

DEFAULT_TOLERANCE = 1e-5
DEPENDENT_JACCARD = 0.6
"""Same-vote overlap above which two LFs count as copies of one another (see
`dependency_weights`)."""
PRIOR_PSEUDO_ROWS = 1.0
"""Dirichlet pseudo-rows per class for the estimated class prior."""
PRIOR_ANCHOR = 0.05
"""The weight, as a share of the rows, of the estimated prior's Dirichlet prior centred on
majority vote's class mix. Without it, on weak LFs (accuracies 0.6–0.7) and a 13% class the
estimate drifts towards 50/50, a mix the votes barely distinguish from the true one, and
the labels fall 10–15 points under majority vote's (benchmarks/label_model_random.py)."""


@dataclass(frozen=True)
class Votes:
    """A label matrix as its distinct rows, each weighted by how often it occurs, and the
    cells where an LF voted as (distinct row, LF x k + class) pairs."""

    k: int
    rows: IntArray
    inverse: IntArray
    weights: FloatArray
    cell_row: IntArray
    cell_col: IntArray
    fires: FloatArray
    several_classes: np.ndarray
    lf_weights: FloatArray

    @property
    def n_lfs(self) -> int:
        return int(self.rows.shape[1])

    @property
    def n_distinct(self) -> int:
        return int(self.rows.shape[0])


def encode(
    matrix: IntArray, k: int, smoothing: float, lf_weights: FloatArray | None = None
) -> Votes:
    """The distinct rows of `matrix` (rows x LFs, checked) and their votes; `fires` is
    each LF's smoothed firing rate over all rows; `lf_weights` (a fitted model's) or, by
    default, the matrix's own `dependency_weights`."""
    n, m = matrix.shape
    if n == 0 or m == 0:
        rows, inverse, weights = matrix[:1], np.zeros(n, np.int64), np.full(min(n, 1), float(n))
    else:
        rows, inverse, weights = _distinct(matrix)
    fired = rows != ABSTAIN
    cell_row, lf = np.nonzero(fired)
    cell_col = lf * k + rows[cell_row, lf]
    fired_rows = (weights[:, None] * fired).sum(axis=0)
    fires = (fired_rows + smoothing) / (n + 2 * smoothing)
    classes_voted = np.stack([(rows == c).any(axis=0) for c in range(k)]).sum(axis=0)
    return Votes(
        k=k,
        rows=rows,
        inverse=inverse,
        weights=weights,
        cell_row=cell_row.astype(np.int64),
        cell_col=cell_col.astype(np.int64),
        fires=np.asarray(fires, dtype=np.float64),
        several_classes=classes_voted >= 2,
        lf_weights=dependency_weights(rows, weights, k) if lf_weights is None else lf_weights,
    )


def dependency_weights(rows: IntArray, weights: FloatArray, k: int) -> FloatArray:
    """Per LF, 1 / the size of its group of near-copies: LFs linked (transitively) when
    the rows where both vote the same class are at least DEPENDENT_JACCARD of the rows
    where either votes. Conditionally independent LFs stay far below (at most 0.33 over
    the 1,200 independent pairs of benchmarks/label_model_random.py); duplicated or
    near-copied ones (80% of the same votes) are above, and would otherwise count as
    independent evidence and carry the fit."""
    m = rows.shape[1]
    if m < 2:
        return np.ones(m)
    fired = (rows != ABSTAIN).astype(np.float64)
    weighted = fired * weights[:, None]
    counts = weighted.sum(axis=0)
    same = np.zeros((m, m))
    for c in range(k):
        votes_c = (rows == c).astype(np.float64)
        same += votes_c.T @ (votes_c * weights[:, None])
    either = counts[:, None] + counts[None, :] - fired.T @ weighted
    linked = same >= DEPENDENT_JACCARD * np.maximum(either, 1.0)
    group = np.arange(m)
    for a, b in zip(*np.nonzero(np.triu(linked, 1)), strict=True):
        old, new = group[b], group[a]
        if old != new:
            group[group == old] = new
    sizes = np.bincount(group, minlength=m)[group]
    return np.asarray(1.0 / sizes, dtype=np.float64)


def _distinct(matrix: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
    """Distinct rows (through a byte view of the row: one 1-D sort), the index of each
    original row among them, and their counts."""
    small = np.ascontiguousarray(matrix.astype(np.int8 if matrix.max() < 127 else np.int64))
    view = small.view(np.dtype((np.void, small.dtype.itemsize * small.shape[1])))[:, 0]
    _, first, inverse, counts = np.unique(
        view, return_index=True, return_inverse=True, return_counts=True
    )
    return (
        np.asarray(matrix[first], dtype=np.int64),
        np.asarray(inverse, dtype=np.int64).reshape(-1),
        counts.astype(np.float64),
    )


@dataclass(frozen=True)
class EMResult:
    """The fitted conditionals theta (LFs, k, k + 1), last column abstain, the class prior,
    the posteriors of the distinct rows, and how the run ended: the iterations it took,
    whether the largest posterior change fell below the tolerance, that change, and the
    log-likelihood of the data under the fit."""

    theta: FloatArray
    prior: FloatArray
    posterior: FloatArray
    iterations: int
    converged: bool
    last_change: float
    log_likelihood: float


def _vote_counts(votes: Votes, mass: FloatArray) -> FloatArray:
    """counts[j, y, v]: the posterior mass of class y on the rows where LF j voted v (v a
    class) or abstained (v = k)."""
    k, m = votes.k, votes.n_lfs
    fired = np.stack(
        [
            np.bincount(votes.cell_col, weights=mass[votes.cell_row, y], minlength=m * k)
            for y in range(k)
        ],
        axis=1,
    )
    counts = np.empty((m, k, k + 1))
    counts[:, :, :k] = fired.reshape(m, k, k).transpose(0, 2, 1)
    counts[:, :, k] = np.maximum(mass.sum(axis=0)[None, :] - counts[:, :, :k].sum(axis=2), 0.0)
    return counts


def m_step(votes: Votes, posterior: FloatArray, smoothing: float, constrained: bool) -> FloatArray:
    """theta[j, y, v] from the expected counts (distinct rows weighted by their counts and
    class posteriors), smoothed, with class-independent firing for LFs that vote several
    classes, projected onto "better than chance" when `constrained`."""
    k = votes.k
    counts = _vote_counts(votes, votes.weights[:, None] * posterior) + smoothing
    theta = counts / counts.sum(axis=2, keepdims=True)
    if constrained:
        _project(theta, counts, k)
    several = votes.several_classes
    if several.any():
        confusion = counts[several][:, :, :k]
        given_fired = confusion / confusion.sum(axis=2, keepdims=True)
        if constrained:
            _project(given_fired, confusion, k)
        fire = votes.fires[several][:, None, None]
        theta[several, :, :k] = fire * given_fired
        theta[several, :, k] = 1.0 - fire[:, :, 0]
    return np.asarray(theta, dtype=np.float64)


def _project(theta: FloatArray, counts: FloatArray, k: int) -> None:
    """In place, for every LF and vote v where some class emits v more readily than class v
    itself: pool the probability of v over the offending classes."""
    for v in range(k):
        column = theta[:, :, v]
        offending = (column > column[:, v : v + 1] * (1 + 1e-12)).any(axis=1)
        for j in np.flatnonzero(offending):
            _enforce_polarity(theta[j], counts[j], v)


def _enforce_polarity(theta_j: FloatArray, counts_j: FloatArray, v: int) -> None:
    """In place: pool the probability of vote v over the classes where it exceeds its
    probability under class v itself, so that no other class emits v more readily."""
    group = [v]
    while True:
        pooled = counts_j[group, v].sum() / counts_j[group].sum()
        outside = [y for y in range(theta_j.shape[0]) if y not in group]
        worse = [y for y in outside if theta_j[y, v] > pooled]
        if not worse:
            break
        group.extend(worse)
    if len(group) == 1:
        return
    for y in group:
        rest = 1.0 - theta_j[y, v]
        scale = (1.0 - pooled) / rest if rest > 0 else 0.0
        theta_j[y] *= scale
        theta_j[y, v] = pooled


def class_mix(votes: Votes, posterior: FloatArray, centre: FloatArray) -> FloatArray:
    """The class prior's M-step under a Dirichlet prior centred on `centre` (majority
    vote's class mix) worth PRIOR_ANCHOR of the rows, plus PRIOR_PSEUDO_ROWS per class."""
    rows = votes.weights.sum()
    mass = (votes.weights[:, None] * posterior).sum(axis=0)
    mass = mass + PRIOR_ANCHOR * rows * centre + PRIOR_PSEUDO_ROWS
    return np.asarray(mass / mass.sum(), dtype=np.float64)


def log_scores(votes: Votes, theta: FloatArray, prior: FloatArray, *, abstains: bool) -> FloatArray:
    """(distinct rows, k): log prior + log-likelihood of each row's votes under each class,
    each LF's term weighted by `Votes.lf_weights` (a group of g near-copies counts as one
    LF); with `abstains` False only the votes that fired count (abstain-blind scoring)."""
    k, m = votes.k, votes.n_lfs
    with np.errstate(divide="ignore"):
        log_theta = np.log(theta)
        base = np.log(prior)
    lf_weights = votes.lf_weights[:, None, None]
    voted = log_theta[:, :, :k] * lf_weights
    if abstains:
        voted = voted - log_theta[:, :, k:] * lf_weights
        base = base + (log_theta[:, :, k] * lf_weights[:, :, 0]).sum(axis=0)
    table = voted.transpose(0, 2, 1).reshape(m * k, k)
    scores = np.empty((votes.n_distinct, k))
    for y in range(k):
        scores[:, y] = np.bincount(
            votes.cell_row, weights=table[votes.cell_col, y], minlength=votes.n_distinct
        )
    return np.asarray(scores + base[None, :], dtype=np.float64)


def softmax(scores: FloatArray) -> FloatArray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


def log_likelihood(votes: Votes, theta: FloatArray, prior: FloatArray) -> float:
    scores = log_scores(votes, theta, prior, abstains=True)
    top = scores.max(axis=1)
    per_row = top + np.log(np.exp(scores - top[:, None]).sum(axis=1))
    return float((votes.weights * per_row).sum())


def run_em(
    votes: Votes,
    start: FloatArray,
    prior: FloatArray,
    *,
    epochs: int,
    tolerance: float,
    smoothing: float,
    estimate_prior: bool,
    constrained: bool,
) -> EMResult:
    """EM from the posteriors `start` (distinct rows, k) for at most `epochs` iterations,
    stopping once no row's posterior moves by more than `tolerance`. With `estimate_prior`
    the class prior starts at `prior` and is re-estimated in every M-step; otherwise it is
    held at `prior`."""
    centre = prior
    posterior = start
    theta = m_step(votes, posterior, smoothing, constrained)
    change = float("inf")
    for iteration in range(1, epochs + 1):
        updated = softmax(log_scores(votes, theta, prior, abstains=True))
        theta = m_step(votes, updated, smoothing, constrained)
        if estimate_prior:
            prior = class_mix(votes, updated, centre)
        change = float(np.abs(updated - posterior).max()) if len(updated) else 0.0
        posterior = updated
        if change < tolerance:
            return _result(votes, theta, prior, posterior, iteration, True, change)
    return _result(votes, theta, prior, posterior, epochs, False, change)


def _result(votes: Votes, theta: FloatArray, prior: FloatArray, posterior: FloatArray,
            iterations: int, converged: bool, change: float) -> EMResult:  # fmt: skip
    return EMResult(
        theta=theta,
        prior=prior,
        posterior=posterior,
        iterations=iterations,
        converged=converged,
        last_change=change,
        log_likelihood=log_likelihood(votes, theta, prior),
    )
