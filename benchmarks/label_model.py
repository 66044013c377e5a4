"""Label models on the WRENCH YouTube weak-label matrices: majority vote, Snorkel's
LabelModel and ours (`fmlang.backends.labelmodel`), side by side in one run.

Data: examples/youtube_spam/data/wrench/{train,valid,test}.json, 10 LFs (-1 abstains),
gold `label` 0 = HAM, 1 = SPAM. Every label model is fitted on the TRAIN weak labels only
(no gold). Hyper-parameters, where tuned, are selected by accuracy on the VALID gold labels
(ours over prior x smoothing, Snorkel over lr x l2 x epochs, both with random ties); TEST
is only ever scored.

Scoring on test (250 rows, 18 where every LF abstains):

- `tie=random`: ties and all-abstain rows get a class among the tied ones. Ours and
  majority vote draw it with a seed, and the figure is the mean over SEEDS seeds. Snorkel's
  `predict(tie_break_policy="random")` is not random: it picks
  `tied[sha1(str(row_index)) % len(tied)]` (`probs_to_preds` in snorkel/utils/core.py), a
  deterministic per-row hash that no seed changes, so its figure is one value (a "mean
  over seeds" of it would be that value repeated); `true-random` is the seeded one.
- `tie=abstain`: ties and all-abstain rows are -1 and counted as WRONG; coverage is the
  share of rows that got a class.
- macro F1 over the two classes, with abstentions counted as misses of the gold class.

    .venv/bin/python benchmarks/label_model.py [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fmlang.backends.labelmodel import LabelModel, fit_label_model, majority_vote

WRENCH = Path(__file__).resolve().parent.parent / "examples" / "youtube_spam" / "data" / "wrench"
K = 2
SEEDS = range(10)
OUR_GRID = {"prior": ["estimated", "uniform"], "smoothing": [0.5, 2.0, 10.0]}
SNORKEL_GRID = {"lr": [0.001, 0.01, 0.1], "l2": [0.0, 0.1, 1.0], "n_epochs": [100, 500]}
Predict = Callable[[np.ndarray, str, int], np.ndarray]


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = json.loads((WRENCH / f"{split}.json").read_text(encoding="utf-8"))
    ordered = [rows[key] for key in sorted(rows, key=int)]
    weak = np.array([row["weak_labels"] for row in ordered], dtype=np.int64)
    return weak, np.array([row["label"] for row in ordered], dtype=np.int64)


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    scores = []
    for c in range(K):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def score(predict: Predict, L: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    randoms = [predict(L, "random", s) for s in SEEDS]
    abstain = predict(L, "abstain", 0)
    return {
        "accuracy_random": float(np.mean([(p == gold).mean() for p in randoms])),
        "f1_random": float(np.mean([macro_f1(p, gold) for p in randoms])),
        "accuracy_abstain": float((abstain == gold).mean()),
        "f1_abstain": macro_f1(abstain, gold),
        "coverage_abstain": float((abstain != -1).mean()),
    }


def majority_predict(L: np.ndarray, tie: str, seed: int) -> np.ndarray:
    return majority_vote(L, K, tie=tie, seed=seed)  # type: ignore[arg-type]


def ours_predict(model: LabelModel) -> Predict:
    return lambda L, tie, seed: replace(model, seed=seed).predict(L, tie=tie)  # type: ignore[arg-type]


def snorkel_predict(model: Any) -> Predict:
    def predict(L: np.ndarray, tie: str, seed: int) -> np.ndarray:
        del seed  # Snorkel's `random` ties are a hash of the row index (module docstring)
        return np.asarray(model.predict(L, tie_break_policy=tie))

    return predict


def fit_snorkel(L: np.ndarray, **options: Any) -> Any:
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    model = SnorkelLabelModel(cardinality=K, verbose=False)
    model.fit(L, seed=0, progress_bar=False, **options)
    return model


def grid(options: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [
        dict(zip(options, values, strict=True)) for values in itertools.product(*options.values())
    ]


def tune(
    fit: Callable[..., Any],
    to_predict: Callable[[Any], Predict],
    train: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray],
    options: dict[str, list[Any]],
) -> tuple[Any, dict[str, Any], float]:
    """The model whose valid accuracy (random ties) is best; the first in grid order wins
    a tie."""
    best: tuple[Any, dict[str, Any], float] | None = None
    for choice in grid(options):
        model = fit(train, **choice)
        accuracy = score(to_predict(model), *valid)["accuracy_random"]
        if best is None or accuracy > best[2]:
            best = (model, choice, accuracy)
    assert best is not None
    return best


def run() -> dict[str, Any]:
    logging.getLogger("snorkel").setLevel(logging.WARNING)
    train, _ = load("train")
    valid = load("valid")
    test_L, test_gold = load("test")
    rows: list[dict[str, Any]] = []

    def add(name: str, config: dict[str, Any], predict: Predict, seconds: float) -> None:
        figures = score(predict, test_L, test_gold)
        valid_accuracy = score(predict, *valid)["accuracy_random"]
        rows.append(
            {
                "model": name,
                "config": config,
                "fit_seconds": seconds,
                "valid_accuracy_random": valid_accuracy,
                **figures,
            }
        )

    add("majority vote", {}, majority_predict, 0.0)
    started = time.perf_counter()
    snorkel_default = fit_snorkel(train)
    add(
        "snorkel LabelModel (defaults)",
        {},
        snorkel_predict(snorkel_default),
        time.perf_counter() - started,
    )
    started = time.perf_counter()
    ours_default = fit_label_model(train, K, seed=0)
    add(
        "ours (defaults)",
        {"prior": "estimated", "smoothing": 0.5},
        ours_predict(ours_default),
        time.perf_counter() - started,
    )
    started = time.perf_counter()
    model, choice, _ = tune(fit_snorkel, snorkel_predict, train, valid, SNORKEL_GRID)
    add(
        "snorkel LabelModel (tuned on valid)",
        choice,
        snorkel_predict(model),
        time.perf_counter() - started,
    )
    started = time.perf_counter()
    model, choice, _ = tune(
        lambda L, **o: fit_label_model(L, K, seed=0, **o), ours_predict, train, valid, OUR_GRID
    )
    add("ours (tuned on valid)", choice, ours_predict(model), time.perf_counter() - started)
    return {
        "dataset": "wrench/youtube",
        "test_rows": len(test_gold),
        "test_all_abstain_rows": int((test_L == -1).all(axis=1).sum()),
        "seeds": len(SEEDS),
        "rows": rows,
    }


def ratio_lines(result: dict[str, Any]) -> list[str]:
    by_name = {row["model"]: row["accuracy_random"] for row in result["rows"]}
    lines = []
    for setting in ("defaults", "tuned on valid"):
        ours, snorkel = by_name[f"ours ({setting})"], by_name[f"snorkel LabelModel ({setting})"]
        lines.append(
            f"ratio ({setting}): ours / snorkel test accuracy = {ours / snorkel:.3f}; "
            f"ours / majority = {ours / by_name['majority vote']:.3f}"
        )
    return lines


def print_table(result: dict[str, Any]) -> None:
    print(
        f"WRENCH YouTube test: {result['test_rows']} rows "
        f"({result['test_all_abstain_rows']} with no vote); fit on train weak labels only"
    )
    print(
        "tie=random: ties and no-vote rows get a random tied class (ours and majority: mean "
        f"of {result['seeds']} seeds; Snorkel: its per-row hash, one value); "
        "tie=abstain: they get -1, counted wrong"
    )
    header = (
        f"{'model':38} {'acc rnd':>8} {'F1 rnd':>7} {'acc abst':>9} {'F1 abst':>8} "
        f"{'cover':>6} {'valid':>6} {'fit s':>6}  config"
    )
    print(header)
    for row in result["rows"]:
        print(
            f"{row['model']:38} {row['accuracy_random']:8.3f} {row['f1_random']:7.3f} "
            f"{row['accuracy_abstain']:9.3f} {row['f1_abstain']:8.3f} "
            f"{row['coverage_abstain']:6.3f} {row['valid_accuracy_random']:6.3f} "
            f"{row['fit_seconds']:6.2f}  {json.dumps(row['config'], sort_keys=True)}"
        )
    for line in ratio_lines(result):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = run()
    if args.json:
        print(json.dumps({**result, "ratios": ratio_lines(result)}, indent=2, sort_keys=True))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
