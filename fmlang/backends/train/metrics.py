"""Evaluation metrics from predictions, without torch: pure functions over lists.

`classification_metrics` gives accuracy, precision/recall/F1 per class, macro F1 and the
confusion matrix (rows: gold class, columns: predicted class). `by_group` computes any
metric function per group value and the largest gap between groups for each scalar metric.
`percentile` interpolates linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

NULL_GROUP = "<null>"


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def per_class(matrix: list[list[int]], classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (0 where undefined, as sklearn's
    zero_division=0)."""
    out = {}
    for k, name in enumerate(classes):
        true_pos = matrix[k][k]
        predicted = sum(row[k] for row in matrix)
        support = sum(matrix[k])
        precision, recall = _ratio(true_pos, predicted), _ratio(true_pos, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def confusion(gold: Sequence[int], pred: Sequence[int], n: int) -> list[list[int]]:
    matrix = [[0] * n for _ in range(n)]
    for g, p in zip(gold, pred, strict=True):
        matrix[g][p] += 1
    return matrix


def classification_metrics(
    gold: Sequence[int], pred: Sequence[int], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix."""
    matrix = confusion(gold, pred, len(classes))
    classes_out = per_class(matrix, classes)
    correct = sum(matrix[k][k] for k in range(len(classes)))
    return {
        "rows": len(gold),
        "accuracy": _ratio(correct, len(gold)),
        "macro_f1": _ratio(sum(c["f1"] for c in classes_out.values()), len(classes)),
        "per_class": classes_out,
        "confusion": {"classes": list(classes), "matrix": matrix},
    }


def perplexity_metrics(nll: Sequence[float], tokens: Sequence[int]) -> dict[str, Any]:
    """Perplexity over completion tokens from per-row summed NLL and token counts."""
    total = sum(tokens)
    mean = _ratio(sum(nll), total)
    return {"rows": len(nll), "tokens": total, "loss": mean, "perplexity": math.exp(mean)}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics a group gap is taken over: top-level numbers and per-class scores
    (`f1[spam]`), not counts."""
    out = {k: float(v) for k, v in metrics.items() if k not in ("rows", "tokens") and _is_num(v)}
    for name, scores in metrics.get("per_class", {}).items():
        for key in ("precision", "recall", "f1"):
            out[f"{key}[{name}]"] = float(scores[key])
    return out


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def by_group(
    groups: Sequence[Any], rows: Sequence[int], compute: Callable[[list[int]], dict[str, Any]]
) -> dict[str, Any]:
    """`compute(indices)` for each group value's rows (indices into `rows`), and per scalar
    metric the largest difference between two groups."""
    members: dict[str, list[int]] = {}
    for index in rows:
        value = groups[index]
        members.setdefault(NULL_GROUP if value is None else str(value), []).append(index)
    results = {name: compute(indices) for name, indices in sorted(members.items())}
    gaps: dict[str, float] = {}
    scalars = [scalar_metrics(m) for m in results.values()]
    for key in sorted(set().union(*scalars)) if scalars else []:
        values = [s[key] for s in scalars if key in s]
        gaps[key] = max(values) - min(values)
    return {"groups": results, "max_gap": gaps}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
