"""Label-model fit speed on a large label matrix: ours against the previous implementation
(one-hot votes and `np.einsum` over every row, as of commit ecbcf01) and Snorkel's
LabelModel, all measured in this run on the same matrix.

The matrix (seeded): ROWS rows x LFS labeling functions, 30% positives; every third LF
votes both classes (coverage 1-15%, accuracy 0.6-0.95), the others vote one class and fire
on it more often than on the other. Reported: seconds for the fit, EM iterations and
whether it converged, covered accuracy against the generating labels.

    .venv/bin/python benchmarks/label_model_speed.py [--rows 50000] [--lfs 73]
        [--baseline-iterations 100] [--no-snorkel] [--json]

The previous implementation ran a fixed 100 iterations by default (it rarely converged);
`--baseline-iterations` sets how many it runs here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

from fmlang.backends.labelmodel import fit_label_model, majority_proba

ROWS = 50_000
LFS = 73


def matrix(rows: int, lfs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    L = np.full((rows, lfs), -1, dtype=np.int64)
    for j in range(lfs):
        coverage, accuracy = rng.uniform(0.01, 0.15), rng.uniform(0.6, 0.95)
        if j % 3 == 0:
            fires = rng.random(rows) < coverage
            right = rng.random(rows) < accuracy
            L[:, j] = np.where(fires, np.where(right, y, 1 - y), -1)
        else:
            polarity, hit = j % 2, 2 * coverage
            fires = np.where(
                y == polarity, rng.random(rows) < hit, rng.random(rows) < hit * (1 - accuracy)
            )
            L[:, j] = np.where(fires, polarity, -1)
    return L, y


def previous_fit(L: np.ndarray, k: int, iterations: int, smoothing: float = 0.5) -> np.ndarray:
    """The previous EM's arithmetic (polarity projection left out, which only makes it
    faster): one-hot votes (rows, LFs, k + 1), an einsum E-step over every row and an
    einsum M-step, for a fixed number of iterations. Returns the posteriors."""
    votes = np.zeros((*L.shape, k + 1))
    np.put_along_axis(votes, np.where(L == -1, k, L)[..., None], 1.0, axis=2)
    posterior = majority_proba(L, k)
    prior = np.full(k, 1.0 / k)
    for _ in range(iterations):
        counts = np.einsum("ny,nmv->myv", posterior, votes) + smoothing
        theta = counts / counts.sum(axis=2, keepdims=True)
        scores = np.log(prior)[None, :] + np.einsum("nmv,myv->ny", votes, np.log(theta))
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        posterior = shifted / shifted.sum(axis=1, keepdims=True)
    return np.asarray(posterior)


def covered_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    covered = pred != -1
    return float((pred[covered] == y[covered]).mean())


def run(rows: int, lfs: int, baseline_iterations: int, snorkel: bool) -> dict[str, Any]:
    L, y = matrix(rows, lfs)
    started = time.perf_counter()
    model = fit_label_model(L, 2)
    ours_seconds = time.perf_counter() - started
    voted = (L != -1).any(axis=1)
    out: dict[str, Any] = {
        "rows": rows,
        "lfs": lfs,
        "distinct_rows": model.distinct_rows,
        "ours": {
            "seconds": ours_seconds,
            "iterations": model.iterations,
            "converged": model.converged,
            "covered_accuracy": covered_accuracy(model.predict(L), y),
        },
    }
    started = time.perf_counter()
    posterior = previous_fit(L, 2, baseline_iterations)
    previous_seconds = time.perf_counter() - started
    previous_pred = np.where(voted, posterior.argmax(axis=1), -1)
    out["previous"] = {
        "seconds": previous_seconds,
        "iterations": baseline_iterations,
        "seconds_per_iteration": previous_seconds / max(1, baseline_iterations),
        "covered_accuracy": covered_accuracy(previous_pred, y),
    }
    if snorkel:
        from snorkel.labeling.model import LabelModel as SnorkelLabelModel

        logging.getLogger("snorkel").setLevel(logging.WARNING)
        started = time.perf_counter()
        other = SnorkelLabelModel(cardinality=2, verbose=False)
        other.fit(L, seed=0, progress_bar=False)
        snorkel_seconds = time.perf_counter() - started
        out["snorkel"] = {
            "seconds": snorkel_seconds,
            "epochs": 100,
            "covered_accuracy": covered_accuracy(
                np.asarray(other.predict(L, tie_break_policy="abstain")), y
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--lfs", type=int, default=LFS)
    parser.add_argument("--baseline-iterations", type=int, default=100)
    parser.add_argument("--no-snorkel", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.rows, args.lfs, args.baseline_iterations, not args.no_snorkel)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    ours, previous = result["ours"], result["previous"]
    print(
        f"label-model fit on {result['rows']:,} rows x {result['lfs']} LFs "
        f"({result['distinct_rows']:,} distinct rows)"
    )
    print(
        f"ours:     {ours['seconds']:7.2f} s  ({ours['iterations']} iterations, "
        f"{'converged' if ours['converged'] else 'NOT converged'}), "
        f"covered accuracy {ours['covered_accuracy']:.3f}"
    )
    print(
        f"previous: {previous['seconds']:7.2f} s  ({previous['iterations']} iterations, "
        f"{previous['seconds_per_iteration']:.3f} s each), "
        f"covered accuracy {previous['covered_accuracy']:.3f}"
    )
    if "snorkel" in result:
        other = result["snorkel"]
        print(
            f"snorkel:  {other['seconds']:7.2f} s  ({other['epochs']} epochs), "
            f"covered accuracy {other['covered_accuracy']:.3f}"
        )
    print(f"ratio: previous / ours = {previous['seconds'] / ours['seconds']:.1f}x")


if __name__ == "__main__":
    main()
