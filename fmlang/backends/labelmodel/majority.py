"""Majority vote over a label matrix, the baseline every label model is compared with."""

from __future__ import annotations

from typing import Literal

import numpy as np

from fmlang.backends.labelmodel.matrix import (
    FloatArray,
    IntArray,
    check_matrix,
    decide,
    tied_classes,
    vote_counts,
)

MajorityTie = Literal["abstain", "random", "first"]


def majority_proba(L: object, k: int) -> FloatArray:
    """(rows, k): probability mass split evenly among the classes with the most votes; a row
    where every LF abstains is uniform over all k classes."""
    counts = vote_counts(check_matrix(L, k), k)
    tied = tied_classes(counts).astype(np.float64)
    return np.asarray(tied / tied.sum(axis=1, keepdims=True), dtype=np.float64)


def majority_vote(L: object, k: int, tie: MajorityTie = "abstain", seed: int = 0) -> IntArray:
    """The class with the most votes per row, or -1. Ties (including rows where every LF
    abstains, a k-way tie at zero) become -1 under `abstain`, a seeded random pick among the
    tied classes under `random`, and the lowest tied class index under `first`."""
    if tie not in ("abstain", "random", "first"):
        raise ValueError(f"unknown tie policy {tie!r}: use abstain, random or first")
    counts = vote_counts(check_matrix(L, k), k)
    return decide(counts, tie, seed=seed)
