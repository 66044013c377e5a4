"""Confidence intervals for the metrics the runtime gates check, from what evaluation kept.

A gate on 186 test rows, or a fairness gap over groups of 32 to 45 rows, compares numbers
that move by several points when one row changes; each gated metric therefore comes with
an interval at a stated confidence (95% unless the constraint says `with confidence C`):

- **accuracy**: the Wilson score interval of `correct` successes in `rows` trials (closed
  form; unlike the normal approximation it stays inside 0..1 and is not empty at 0% or 100%).
- **precision, recall, F1 (of a class), macro F1**: a percentile bootstrap. Resampling the
  evaluation rows with replacement draws a multinomial over the confusion matrix's cells,
  so the matrix kept by evaluation is all the bootstrap needs: `RESAMPLES` matrices drawn
  at once and each metric computed over them with numpy.
- **max_gap(metric, by = column)**: the same bootstrap within each group (a group keeps its
  size, as the evaluation split fixed it); each resample's gap is its largest minus its
  smallest group. The percentile interval of a maximum leans high, which errs on the side
  of failing a `<=` gate; a group scoring 0% or 100% adds no resampling spread, which is
  what the small-group rule below (Wilson per group for accuracy) is for.
- **perplexity**: a percentile bootstrap over rows of exp(Σ NLL / Σ tokens), from the
  per-row summed NLL and completion-token counts evaluation keeps (`per_row`).

Every bootstrap uses `RESAMPLES` = 2,000 resamples from a generator seeded with `SEED`, so
the same metrics give the same interval on every machine and every rerun.

**Too little data** (`too_wide`): a gate means something only if its data can tell a
passing value from a failing one. The rule: an interval wider than the whole range of
values that pass the gate is too wide: for `accuracy >= 0.9` the range 0.9..1 (0.1 wide),
for `perplexity <= 12` the range 1..12, for `max_gap(...) <= 0.2` the range 0..0.2, which
each group's own interval of the gap's metric is held to (a group whose metric is
uncertain by more than the whole allowed gap cannot show that the gap holds or not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

DEFAULT_CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 15
_CHUNK = 4_000_000  # resampled row indices held at once for perplexity (32 MB of int64)

Metric = str  # `accuracy`, `macro_f1`, `f1[spam]`, `precision[ham]`, `perplexity`, ...


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    n: int  # rows the interval rests on
    method: str  # "wilson" or "bootstrap"

    @property
    def width(self) -> float:
        return self.high - self.low

    def show(self) -> str:
        return f"[{_fmt(self.low)}, {_fmt(self.high)}]"


def _fmt(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"


def z_score(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.96 for 95%."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(correct: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval of a binomial proportion `correct / n` (n > 0)."""
    z = z_score(confidence)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half), confidence, n, "wilson")


def percentile_interval(samples: np.ndarray, confidence: float, n: int) -> Interval:
    alpha = 1 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), confidence, n, "bootstrap")


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


# ---- classification: confusion matrices ---------------------------------------------------


def resample_matrices(matrix: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """`resamples` confusion matrices of bootstrap resamples of the rows `matrix` counts:
    shape (resamples, K, K)."""
    n = int(matrix.sum())
    k = matrix.shape[0]
    cells = rng.multinomial(n, matrix.reshape(-1) / n, size=resamples)
    return cells.reshape(resamples, k, k)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (as the point metrics, sklearn's zero_division=0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def matrix_metric(matrices: np.ndarray, metric: Metric, classes: list[str]) -> np.ndarray:
    """`metric` of each confusion matrix in a (B, K, K) stack (rows gold, columns predicted),
    as `train/metrics.py` computes it for one matrix."""
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    if metric == "accuracy":
        return _divide(diagonal.sum(axis=1), matrices.sum(axis=(1, 2)))
    precision = _divide(diagonal, matrices.sum(axis=1))
    recall = _divide(diagonal, matrices.sum(axis=2))
    f1 = _divide(2 * precision * recall, precision + recall)
    if metric == "macro_f1":
        return np.asarray(f1.mean(axis=1))
    name, _, cls = metric.partition("[")
    index = classes.index(cls.rstrip("]"))
    return {"precision": precision, "recall": recall, "f1": f1}[name][:, index]


def _confusion(values: dict[str, Any]) -> tuple[np.ndarray, list[str]] | None:
    confusion = values.get("confusion")
    if not isinstance(confusion, dict) or "matrix" not in confusion:
        return None
    matrix = np.asarray(confusion["matrix"], dtype=np.int64)
    return (matrix, list(confusion["classes"])) if matrix.sum() > 0 else None


def _known(metric: Metric, classes: list[str]) -> bool:
    name, _, cls = metric.partition("[")
    if not cls:
        return name in ("accuracy", "macro_f1")
    return name in ("precision", "recall", "f1") and cls.rstrip("]") in classes


def classification_interval(
    values: dict[str, Any], metric: Metric, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """The interval of one split's (or group's) classification `metric`; None when the
    metrics hold no confusion matrix or the metric is not one of it."""
    found = _confusion(values)
    if found is None or not _known(metric, found[1]):
        return None
    matrix, classes = found
    n = int(matrix.sum())
    if metric == "accuracy":
        return wilson(int(np.trace(matrix)), n, confidence)
    samples = matrix_metric(resample_matrices(matrix, _rng(), RESAMPLES), metric, classes)
    return percentile_interval(samples, confidence, n)


# ---- fairness: gaps between groups --------------------------------------------------------


def gap_interval(
    groups: dict[str, dict[str, Any]], metric: Metric, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """The bootstrap interval of max − min of `metric` over `groups` (each group's
    metrics, as `by_group` wrote them), resampling rows within each group."""
    found = [_confusion(values) for values in groups.values()]
    if len(found) < 2 or any(f is None or not _known(metric, f[1]) for f in found):
        return None
    rng = _rng()
    per_group = [
        matrix_metric(resample_matrices(matrix, rng, RESAMPLES), metric, classes)
        for matrix, classes in (f for f in found if f is not None)
    ]
    stacked = np.stack(per_group, axis=1)
    rows = sum(int(f[0].sum()) for f in found if f is not None)
    return percentile_interval(stacked.max(axis=1) - stacked.min(axis=1), confidence, rows)


def group_intervals(
    groups: dict[str, dict[str, Any]], metric: Metric, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Interval]:
    """Each group's own interval of `metric` (the groups where one can be computed)."""
    out = {}
    for name, values in groups.items():
        interval = classification_interval(values, metric, confidence)
        if interval is not None:
            out[name] = interval
    return out


# ---- generation: perplexity ---------------------------------------------------------------


def perplexity_interval(
    per_row: dict[str, Any] | None, confidence: float = DEFAULT_CONFIDENCE
) -> Interval | None:
    """The bootstrap interval of exp(Σ NLL / Σ tokens) over resampled rows, from the
    per-row summed NLL and completion-token counts; None without them."""
    if not isinstance(per_row, dict) or not per_row.get("nll"):
        return None
    nll = np.asarray(per_row["nll"], dtype=float)
    tokens = np.asarray(per_row["tokens"], dtype=float)
    n = len(nll)
    rng = _rng()
    samples = np.empty(RESAMPLES)
    step = max(1, _CHUNK // n)
    for start in range(0, RESAMPLES, step):
        count = min(step, RESAMPLES - start)
        rows = rng.integers(0, n, size=(count, n))
        mean_nll = _divide(nll[rows].sum(axis=1), tokens[rows].sum(axis=1))
        samples[start : start + count] = np.exp(mean_nll)
    return percentile_interval(samples, confidence, n)


# ---- the small-data rule ------------------------------------------------------------------


def passing_range(op: str, bound: float, metric: str) -> tuple[float, float]:
    """The values that pass `metric op bound`: a fraction lies in 0..1, a gap in 0..1, a
    perplexity in 1..∞."""
    low, high = (1.0, float("inf")) if metric == "perplexity" else (0.0, 1.0)
    return (bound, high) if op in (">=", ">") else (low, bound)


def too_wide(interval: Interval, op: str, bound: float, metric: str) -> bool:
    """True when the interval is wider than every value that passes the gate: the data
    cannot place a model inside the passing range, however good it is."""
    low, high = passing_range(op, bound, metric)
    return interval.width > max(0.0, high - low)
