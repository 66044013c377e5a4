"""Label-matrix helpers shared by majority vote, the label model and the analysis:
validation, vote counts and turning class scores into decisions under a tie
policy."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ABSTAIN = -1
"""The value a labeling function writes into the matrix when it does not vote."""

TiePolicy = Literal["abstain", "random", "first", "prior"]
IntArray = NDArray[np.signedinteger[Any]]  # label matrices keep their width (int8 from a stage)
FloatArray = NDArray[np.float64]

_TIE_TOLERANCE = 1e-9


def check_matrix(L: object, k: int) -> IntArray:
    """`L` as a 2-D signed-integer array (its own width: a labels stage's int8 matrix is not
    copied to int64), after checking every value is -1 or a class in 0..k-1."""
    if k < 2:
        raise ValueError(f"a label matrix needs at least 2 classes, got k={k}")
    matrix = np.asarray(L)
    if matrix.ndim != 2:
        raise ValueError(f"the label matrix must be 2-D (rows x LFs), got shape {matrix.shape}")
    if matrix.size and not np.issubdtype(matrix.dtype, np.integer):
        raise ValueError(f"the label matrix must hold integers, got {matrix.dtype}")
    if not np.issubdtype(matrix.dtype, np.signedinteger):  # unsigned: -1 cannot be there
        matrix = matrix.astype(np.int64)
    bad = (matrix < ABSTAIN) | (matrix >= k)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"label matrix value {int(matrix[row, col])} at row {row}, LF {col} is outside "
            f"-1..{k - 1} (-1 abstains, 0..{k - 1} are classes)"
        )
    return matrix


def vote_counts(matrix: IntArray, k: int) -> FloatArray:
    """(rows, k): how many labeling functions voted for each class in each row."""
    counts = np.zeros((matrix.shape[0], k), dtype=np.float64)
    for c in range(k):
        counts[:, c] = (matrix == c).sum(axis=1)
    return counts


def tied_classes(scores: FloatArray) -> NDArray[np.bool_]:
    """(rows, k): which classes share the row's best score, within a relative tolerance."""
    best = scores.max(axis=1, keepdims=True)
    return np.asarray(np.isclose(scores, best, rtol=_TIE_TOLERANCE, atol=0.0))


def decide(
    scores: FloatArray,
    tie: TiePolicy,
    *,
    seed: int = 0,
    prior: FloatArray | None = None,
    no_votes: NDArray[np.bool_] | None = None,
) -> IntArray:
    """The best-scoring class per row, ties settled by `tie`: -1 (`abstain`), a seeded
    random pick among the tied classes (`random`), the lowest tied class index (`first`) or
    the tied class the prior favours (`prior`). Rows flagged in `no_votes` get -1 under
    `abstain` whatever their scores."""
    tied = tied_classes(scores)
    winners = np.argmax(tied, axis=1).astype(np.int64)
    is_tie = tied.sum(axis=1) > 1
    if tie == "abstain":
        winners[is_tie] = ABSTAIN
        if no_votes is not None:
            winners[no_votes] = ABSTAIN
    elif tie == "random":
        noise = np.random.default_rng(seed).random(scores.shape)
        winners = np.argmax(np.where(tied, noise, -1.0), axis=1).astype(np.int64)
    elif tie == "prior":
        weights = np.ones(scores.shape[1]) if prior is None else prior
        winners = np.argmax(np.where(tied, weights[None, :], -1.0), axis=1).astype(np.int64)
    elif tie != "first":
        raise ValueError(f"unknown tie policy {tie!r}: use abstain, random, first or prior")
    return np.asarray(winners, dtype=np.int64)
