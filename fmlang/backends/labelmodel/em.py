"""Expectation–maximisation for the Dawid–Skene label model.

The generative model: a row's true class y is drawn from a class prior, then every
labeling function j independently emits a vote v (one of the k classes, or abstain) with
probability theta[j, y, v]. Because abstention is part of v, an LF that fires mostly on one
class (as most single-polarity keyword LFs do) is modelled by its class-conditional firing
rate, not by a single accuracy number.

EM starts from the majority-vote posteriors, alternates a smoothed M-step (Dirichlet
pseudo-counts) with an E-step over the whole likelihood, and after every M-step projects
theta onto "better than the other classes": an LF's vote v may not be more likely under
another class than under v itself. Without that constraint the latent classes drift towards
clusters of firing patterns (short comments vs long ones) instead of the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmlang.backends.labelmodel.matrix import FloatArray

TOLERANCE = 1e-7


@dataclass(frozen=True)
class EMResult:
    """The fitted conditionals theta (LFs, k, k + 1), last column abstain, and how the run
    ended."""

    theta: FloatArray
    posterior: FloatArray
    iterations: int
    converged: bool


def m_step(posterior: FloatArray, votes: FloatArray, smoothing: float) -> FloatArray:
    """theta[j, y, v] from expected counts: rows weighted by their class posterior."""
    counts = np.einsum("ny,nmv->myv", posterior, votes) + smoothing
    theta = counts / counts.sum(axis=2, keepdims=True)
    k = posterior.shape[1]
    for j in range(theta.shape[0]):
        for v in range(k):
            _enforce_polarity(theta[j], counts[j], v)
    return np.asarray(theta, dtype=np.float64)


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


def log_scores(
    votes: FloatArray, theta: FloatArray, prior: FloatArray, *, abstains: bool
) -> FloatArray:
    """(rows, k): log prior + log-likelihood of each row's votes under each class; with
    `abstains` False only the votes that fired count (abstain-blind scoring)."""
    log_theta = np.log(theta)
    if not abstains:
        log_theta = log_theta.copy()
        log_theta[:, :, -1] = 0.0
    scores = np.log(prior)[None, :] + np.einsum("nmv,myv->ny", votes, log_theta)
    return np.asarray(scores, dtype=np.float64)


def softmax(scores: FloatArray) -> FloatArray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


def run_em(
    votes: FloatArray, start: FloatArray, prior: FloatArray, *, epochs: int, smoothing: float
) -> EMResult:
    """EM from the posteriors `start` (rows, k) for at most `epochs` iterations, stopping
    once no row's posterior moves by more than TOLERANCE. The class prior is held fixed
    (an EM step on the prior over the whole likelihood lets abstain patterns pour every
    row into one class; `model.py` estimates it from the votes alone between runs)."""
    posterior = start
    theta = m_step(posterior, votes, smoothing)
    for iteration in range(1, epochs + 1):
        updated = softmax(log_scores(votes, theta, prior, abstains=True))
        theta = m_step(updated, votes, smoothing)
        if np.abs(updated - posterior).max() < TOLERANCE:
            return EMResult(theta, updated, iteration, True)
        posterior = updated
    return EMResult(theta, posterior, epochs, False)
