"""The run report's pictures, each a PNG (bytes) drawn by matplotlib's Agg backend.

matplotlib is imported here only, and only when a picture is drawn, so a run whose report
has nothing to draw never loads it. Every function takes what `inputs.py` read and returns
None when there is nothing to draw.
"""

from __future__ import annotations

import io
import re
from typing import Any

from fmlang.backends.report.inputs import GroupView, LabelsInput, ModelInput, mapping

BLUE, ORANGE, GREEN, RED, GREY = "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8c8c8c"
MIB = 2**20
_UNITS_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0, "min": 60000.0}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure: Any) -> bytes:
    """The figure as PNG bytes (no timestamp or version in its metadata); closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    pyplot().close(figure)
    return buffer.getvalue()


# ---- labeling functions -------------------------------------------------------------------


def lf_picture(labels: LabelsInput) -> bytes | None:
    """Coverage, overlaps, conflicts and accuracy (against @gold, else the label model's
    learned estimate as a marker) of each labeling function, one panel each."""
    lfs = [lf for lf in labels.analysis["analysis"].get("lfs") or [] if isinstance(lf, dict)]
    if not lfs:
        return None
    plt = pyplot()
    names = [str(lf.get("name")) for lf in lfs]
    rows = list(range(len(names)))
    figure, axes = plt.subplots(1, 4, figsize=(13, max(2.6, 0.34 * len(names) + 1.4)), sharey=True)
    for axis, key in zip(axes[:3], ("coverage", "overlaps", "conflicts"), strict=True):
        values = [float(lf.get(key) or 0.0) for lf in lfs]
        axis.barh(rows, values, color=RED if key == "conflicts" else BLUE)
        _fraction_axis(axis, key)
    gold = [lf.get("accuracy") for lf in lfs]
    colors = [GREEN if (g or 0) >= 0.5 else RED for g in gold]
    axes[3].barh(rows, [g or 0.0 for g in gold], color=colors, label="against @gold")
    learned = [(r, lf["learned_accuracy"]) for r, lf in zip(rows, lfs, strict=True)
               if isinstance(lf.get("learned_accuracy"), int | float)]  # fmt: skip
    if learned:
        axes[3].plot([v for _, v in learned], [r for r, _ in learned], "D", color="black",
                     markersize=4, label="learned by the label model")  # fmt: skip
        axes[3].legend(fontsize=7, loc="lower right")
    axes[3].axvline(0.5, color=GREY, linewidth=0.8, linestyle="--")
    _fraction_axis(axes[3], "accuracy")
    axes[0].set_yticks(rows, names, fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle(f"labeling functions of {labels.stage} ({_rows(labels)} rows)")
    figure.tight_layout()
    return png(figure)


def _rows(labels: LabelsInput) -> str:
    rows = (labels.analysis["analysis"].get("totals") or {}).get("rows")
    return f"{rows:,}" if isinstance(rows, int) else "?"


def _fraction_axis(axis: Any, title: str) -> None:
    axis.set_xlim(0.0, 1.0)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", alpha=0.3)


def label_model_picture(labels: list[LabelsInput]) -> bytes | None:
    """The label model's accuracy against @gold (on the rows it labels, and on all rows
    with unlabelled ones wrong) beside majority vote's, for every labels stage with gold."""
    scored = [lb for lb in labels if "accuracy_all" in (lb.analysis.get("label_model") or {})]
    if not scored:
        return None
    plt = pyplot()
    series = (("label model, rows it labels", "accuracy_covered", BLUE),
              ("label model, all rows", "accuracy_all", ORANGE),
              ("majority vote, rows it labels", "majority_accuracy_covered", GREY))  # fmt: skip
    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.9 * len(scored)))
    height = 0.8 / len(series)
    for k, (label, key, color) in enumerate(series):
        for r, lb in enumerate(scored):
            value = {
                **(lb.analysis.get("versus_majority") or {}),
                **lb.analysis["label_model"],
            }.get(key)
            if isinstance(value, int | float):
                y = r + (k - 1) * height
                axis.barh(y, value, height, color=color, label=label if r == 0 else None)
                axis.text(min(value, 0.93) + 0.01, y, f"{value:.1%}", va="center", fontsize=8)
    axis.set_yticks(range(len(scored)), [lb.stage for lb in scored], fontsize=9)
    axis.invert_yaxis()
    _fraction_axis(axis, "label model against the @gold labels")
    axis.set_xlim(0.0, 1.05)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return png(figure)


# ---- training -----------------------------------------------------------------------------


def training_picture(models: list[ModelInput]) -> bytes | None:
    """Each model's training loss by step, with the evaluation loss early stopping measured
    on its split (a selection candidate's) on the same axes."""
    curves = [(m, c, e) for m in models for c, e in [_curves(m.metrics)] if c or e]
    if not curves:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.6), squeeze=False)
    for axis, (model, train, evaluation) in zip(axes[0], curves, strict=True):
        if train:
            axis.plot(
                *zip(*train, strict=True), "o-", color=BLUE, markersize=3, label="training loss"
            )
        if evaluation:
            split = ((model.metrics.get("train") or {}).get("early_stopping") or {}).get("split")
            label = f"evaluation loss on {split}" if split else "evaluation loss"
            axis.plot(
                *zip(*evaluation, strict=True), "s--", color=ORANGE, markersize=4, label=label
            )
        axis.set_title(model.stage, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return png(figure)


def _curves(metrics: dict[str, Any]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train = mapping(metrics.get("train"))
    points = [(int(p[0]), float(p[1])) for p in train.get("loss_curve") or []
              if isinstance(p, list | tuple) and len(p) == 2]  # fmt: skip
    stopping = mapping(train.get("early_stopping"))
    checks = [(int(c["step"]), float(c["loss"])) for c in stopping.get("checks") or []
              if isinstance(c, dict) and isinstance(c.get("loss"), int | float)]  # fmt: skip
    return points, checks


# ---- groups and fairness ------------------------------------------------------------------


def groups_picture(model: ModelInput, view: GroupView) -> bytes:
    """Each group's metric with its 95% interval; with a fairness gate, the band its bound
    allows below the best group (a group left of it breaks the gap)."""
    plt = pyplot()
    names = sorted(view.values)
    rows = list(range(len(names)))
    figure, axis = plt.subplots(figsize=(8, 1.4 + 0.42 * len(names)))
    values = [view.values[n] for n in names]
    low = [view.values[n] - view.intervals[n].low if n in view.intervals else 0.0 for n in names]
    high = [view.intervals[n].high - view.values[n] if n in view.intervals else 0.0 for n in names]
    if view.gate is not None and isinstance(view.gate.get("bound"), int | float):
        best = max(values)
        axis.axvspan(best - float(view.gate["bound"]), best, color=GREEN, alpha=0.12,
                     label=f"allowed by max_gap <= {view.gate['bound']:g}")  # fmt: skip
        axis.axvline(best, color=GREEN, linewidth=0.8)
    axis.errorbar(values, rows, xerr=[low, high], fmt="o", color=BLUE, capsize=4,
                  label="measured, 95% interval")  # fmt: skip
    axis.set_yticks(rows, [f"{n} ({_group_rows(model, view, n)} rows)" for n in names], fontsize=9)
    axis.invert_yaxis()
    axis.set_xlabel(view.metric)
    axis.set_title(_groups_title(model, view), fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return png(figure)


def _group_rows(model: ModelInput, view: GroupView, name: str) -> str:
    result = (model.metrics.get("eval") or {}).get(view.split) or {}
    rows = (((result.get("by") or {}).get(view.by) or {}).get("groups") or {}).get(name, {})
    return str(rows.get("rows", "?"))


def _groups_title(model: ModelInput, view: GroupView) -> str:
    title = f"{model.stage}: {view.metric} by {view.by} on {view.split}"
    gate = view.gate
    if gate is None or not isinstance(gate.get("measured"), int | float):
        return title
    verdict = {True: "passes", False: "fails", None: "not checked"}[gate.get("passed")]
    interval = ""
    if isinstance(gate.get("ci_low"), int | float) and isinstance(gate.get("ci_high"), int | float):
        interval = f" [{gate['ci_low']:.3g}, {gate['ci_high']:.3g}]"
    return (
        f"{title}\ngap {gate['measured']:.3g}{interval} {gate['op']} {gate['bound']:g}: {verdict}"
    )


# ---- memory and latency -------------------------------------------------------------------


def memory_rows(model: ModelInput) -> list[tuple[str, float | None, float | None]]:
    """(term, predicted MiB, measured MiB) for the peak and the terms both sides name."""
    memory = mapping(model.metrics.get("memory"))
    predicted, measured = mapping(memory.get("predicted")), mapping(memory.get("measured"))
    if not predicted and not measured:
        return []
    rows = [
        (
            "peak",
            _mib(predicted.get("allocated", predicted.get("peak"))),
            _mib(measured.get("peak")),
        )
    ]
    terms, measured_terms = mapping(predicted.get("per_device")), mapping(measured.get("terms"))
    for term in ("weights", "trainable", "optimizer"):
        if term in terms or term in measured_terms:
            rows.append((term, _mib(terms.get(term)), _mib(measured_terms.get(term))))
    return rows


def latency_rows(model: ModelInput) -> list[tuple[str, float | None, float | None, float | None]]:
    """(hardware, predicted ms, measured p50 ms, measured p95 ms) for each latency measured."""
    predicted = mapping(model.metrics.get("predicted"))
    rows = []
    for hardware, latency in mapping(model.metrics.get("latency")).items():
        if isinstance(latency, dict) and latency.get("measured"):
            guess = predicted.get(f"latency@{hardware}")
            rows.append((str(hardware), milliseconds(guess), _number(latency.get("p50_ms")),
                         _number(latency.get("p95_ms"))))  # fmt: skip
    return rows


def resources_picture(models: list[ModelInput]) -> bytes | None:
    """Training memory and serving latency, the cost model's prediction beside the
    measurement, one pair of bars per quantity."""
    memory = [(f"{m.stage}\n{term}", guess, got) for m in models
              for term, guess, got in memory_rows(m)]  # fmt: skip
    latency = [(f"{m.stage}\n{hardware} p95{_loaded(m, hardware)}", guess, p95) for m in models
               for hardware, guess, _, p95 in latency_rows(m)]  # fmt: skip
    panels = [(title, unit, rows) for title, unit, rows in (
        ("training memory: predicted vs measured", "MiB", memory),
        ("latency (batch 1): predicted vs measured p95", "ms", latency)) if rows]  # fmt: skip
    if not panels:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False)
    for axis, (title, unit, rows) in zip(axes[0], panels, strict=True):
        _pairs(axis, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], unit)
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return png(figure)


def _loaded(model: ModelInput, hardware: str) -> str:
    """A note under a latency measured while other processes used the cores (the gate
    was not checked on it)."""
    load = mapping(mapping(mapping(model.metrics.get("latency")).get(hardware)).get("load"))
    return "\n(measured on a busy machine)" if load.get("loaded") else ""


def _pairs(axis: Any, labels: list[str], predicted: list[float | None],
           measured: list[float | None], unit: str) -> None:  # fmt: skip
    positions = range(len(labels))
    width = 0.38
    for offset, values, color, name in ((-width / 2, predicted, GREY, "predicted"),
                                        (width / 2, measured, BLUE, "measured")):  # fmt: skip
        bars = axis.bar([p + offset for p in positions], [v or 0.0 for v in values], width,
                        color=color, label=name)  # fmt: skip
        axis.bar_label(bars, [short(v) for v in values], fontsize=7)
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_ylabel(unit)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def milliseconds(text: Any) -> float | None:
    """The verifier's latency estimate as it shows it (`132 ms`, `1.78 s`) in ms."""
    if isinstance(text, int | float):
        return float(text) * 1000.0
    found = re.fullmatch(r"\s*([0-9.]+(?:e-?\d+)?)\s*(ns|µs|us|ms|s|min)\s*", str(text or ""))
    return float(found.group(1)) * _UNITS_MS[found.group(2)] if found else None


def short(value: float | None) -> str:
    """Three significant digits, never in exponent form: 0.00684, 19.8, 516, 1,780."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _mib(value: Any) -> float | None:
    return value / MIB if isinstance(value, int | float) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
