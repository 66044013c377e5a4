"""Label models on 100 random label matrices: majority vote, Snorkel's LabelModel and ours
(`fmlang.backends.labelmodel`), side by side in one run.

Each matrix (seeded by its index) draws: 500-3,000 rows; a positive-class share of 5-50%;
3-20 labeling functions, each either two-sided (fires at a class-independent rate of
5-50% and votes the true class with accuracy 0.55-0.95) or single-polarity (votes one
class, firing on it at 5-50% and on the other class at 5-60% of that rate); and, on 40% of
the matrices, dependencies: 1-3 exact duplicates of existing LFs, or near-copies (an LF
whose votes follow another LF's on 80% of the rows and are redrawn on the rest).

Every model is fitted without gold, with its defaults (Snorkel: `fit(L, seed=0)`, so a
uniform class balance; ours: `fit_label_model(L, 2)`), and scored against the generating
labels on the rows it labels. Policy: ties and rows where every LF abstains get no label
(`tie = abstain` for all three), so each accuracy is a covered accuracy and the coverage is
printed beside it. "under MV by 10+" counts the matrices where the model's covered
accuracy is more than 10 points below majority vote's.

    .venv/bin/python benchmarks/label_model_random.py [--matrices 100] [--no-snorkel] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

from fmlang.backends.labelmodel import fit_label_model, majority_vote

MARGIN = 0.10


def random_matrix(index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng(index)
    rows = int(rng.integers(500, 3001))
    balance = float(rng.uniform(0.05, 0.5))
    lfs = int(rng.integers(3, 21))
    y = (rng.random(rows) < balance).astype(np.int64)
    columns = []
    for _ in range(lfs):
        rate = rng.uniform(0.05, 0.5)
        if rng.random() < 0.5:
            fires = rng.random(rows) < rate
            right = rng.random(rows) < rng.uniform(0.55, 0.95)
            columns.append(np.where(fires, np.where(right, y, 1 - y), -1))
        else:
            polarity = int(rng.integers(0, 2))
            other = rate * rng.uniform(0.05, 0.6)
            fires = rng.random(rows) < np.where(y == polarity, rate, other)
            columns.append(np.where(fires, polarity, -1))
    dependent = "none"
    if rng.random() < 0.2:
        dependent = "duplicates"
        for _ in range(int(rng.integers(1, 4))):
            columns.append(columns[int(rng.integers(0, lfs))].copy())
    elif rng.random() < 0.25:  # 0.8 x 0.25 = 20% of all matrices
        dependent = "near-copies"
        for _ in range(int(rng.integers(1, 4))):
            source = columns[int(rng.integers(0, lfs))]
            redraw = rng.random(rows) < 0.2
            shuffled = source[rng.permutation(rows)]
            columns.append(np.where(redraw, shuffled, source))
    facts = {"rows": rows, "balance": balance, "lfs": len(columns), "dependent": dependent}
    return np.stack(columns, axis=1).astype(np.int64), y, facts


def covered(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    labelled = pred != -1
    accuracy = float((pred[labelled] == y[labelled]).mean()) if labelled.any() else 0.0
    return accuracy, float(labelled.mean())


def snorkel_predict(L: np.ndarray) -> np.ndarray:
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    model = SnorkelLabelModel(cardinality=2, verbose=False)
    model.fit(L, seed=0, progress_bar=False)
    return np.asarray(model.predict(L, tie_break_policy="abstain"))


def ours_predict(L: np.ndarray) -> np.ndarray:
    return fit_label_model(L, 2).predict(L)


def run(matrices: int, snorkel: bool) -> dict[str, Any]:
    logging.getLogger("snorkel").setLevel(logging.WARNING)
    models: dict[str, Any] = {"majority vote": lambda L: majority_vote(L, 2, tie="abstain")}
    if snorkel:
        models["snorkel LabelModel"] = snorkel_predict
    models["ours"] = ours_predict
    per_matrix = []
    seconds = dict.fromkeys(models, 0.0)
    for index in range(matrices):
        L, y, facts = random_matrix(index)
        scores = {}
        for name, predict in models.items():
            started = time.perf_counter()
            pred = predict(L)
            seconds[name] += time.perf_counter() - started
            accuracy, coverage = covered(pred, y)
            scores[name] = {"accuracy": accuracy, "coverage": coverage}
        per_matrix.append({"index": index, **facts, "scores": scores})
    summary = {}
    for name in models:
        accuracies = [m["scores"][name]["accuracy"] for m in per_matrix]
        majority = [m["scores"]["majority vote"]["accuracy"] for m in per_matrix]
        summary[name] = {
            "mean_covered_accuracy": float(np.mean(accuracies)),
            "mean_coverage": float(np.mean([m["scores"][name]["coverage"] for m in per_matrix])),
            "under_majority_by_10": int(
                sum(a < b - MARGIN for a, b in zip(accuracies, majority, strict=True))
            ),
            "worst_vs_majority": float(
                min(a - b for a, b in zip(accuracies, majority, strict=True))
            ),
            "fit_seconds": seconds[name],
        }
    return {"matrices": matrices, "summary": summary, "per_matrix": per_matrix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", type=int, default=100)
    parser.add_argument("--no-snorkel", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.matrices, not args.no_snorkel)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    print(
        f"{result['matrices']} random label matrices (binary, 5-50% positives, 3-20 LFs, "
        "40% with duplicated or near-copied LFs); ties and no-vote rows unlabelled"
    )
    print(
        f"{'model':22} {'covered acc':>11} {'coverage':>9} {'under MV by 10+':>16} "
        f"{'worst vs MV':>12} {'fit s':>7}"
    )
    for name, row in result["summary"].items():
        print(
            f"{name:22} {row['mean_covered_accuracy']:11.3f} {row['mean_coverage']:9.3f} "
            f"{row['under_majority_by_10']:16d} {row['worst_vs_majority']:+12.3f} "
            f"{row['fit_seconds']:7.1f}"
        )


if __name__ == "__main__":
    main()
