"""The end-of-run summary of `fmc run`: each stage (ran or cached, and why; its time; its
key metrics; its log), every gate with its confidence interval, predicted against measured
memory and latency, and where the artifacts are. `fmc run` prints it (`cli/run_display.py`)
and `--format json` emits it as it is here, with the diagnostics beside it.

A dry run's summary has the same shape: each stage `would run` (and why) or `cached`.
Paths are relative to the current folder when under it, so the summary is the same for the
same project wherever it sits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmlang.backends.data.stages import Outcome
from fmlang.backends.run import RunReport

SCHEMA_VERSION = "1"
GIB = 2**30
CACHED = "unchanged: same inputs, settings and outputs as its last run"


def summary(
    report: RunReport, build_dir: Path, wall_s: float, dry_run: bool = False
) -> dict[str, Any]:
    metrics = {} if dry_run else {o.stage: _metrics_file(build_dir, o) for o in report.outcomes}
    stages = [_stage(report, build_dir, o, metrics.get(o.stage)) for o in report.outcomes]
    stages += [
        {"stage": s, "status": "would run", "reason": why} for s, why in report.planned.items()
    ]
    order = report.order or [o.stage for o in report.outcomes]
    return {
        "schema_version": SCHEMA_VERSION,
        "dry_run": dry_run,
        "build_dir": shown_path(build_dir),
        "wall_s": round(wall_s, 3),
        "stages": sorted(stages, key=lambda s: order.index(s["stage"])),
        "gates": [g for stage, m in metrics.items() for g in _gates(stage, m)],
        "predicted_vs_measured": [r for stage, m in metrics.items() for r in _versus(stage, m)],
        "artifacts": {} if dry_run else _artifacts(build_dir, report),
    }


def shown_path(path: Path) -> str:
    """`path` relative to the current folder when it is under it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return absolute.as_posix()


def _stage(
    report: RunReport, build_dir: Path, outcome: Outcome, measured: dict[str, Any] | None
) -> dict[str, Any]:
    """The stage as the summary lists it; `measured` (None in a dry run: a plan says what
    would run, not what ran last time) gives its key metrics."""
    name = outcome.stage
    entry: dict[str, Any] = {
        "stage": name,
        "status": "cached" if outcome.skipped else "ran",
        "reason": CACHED if outcome.skipped else report.reasons.get(name, ""),
    }
    if name in report.seconds:
        entry["wall_s"] = report.seconds[name]
    if measured is not None:
        entry["metrics"] = key_metrics(name, measured)
    if name in report.logs:
        entry["log"] = shown_path(build_dir / report.logs[name])
    return entry


def _metrics_file(build_dir: Path, outcome: Outcome) -> dict[str, Any]:
    """What the stage measured: its outcome's summary, or for a cached stage the report it
    wrote when it ran (the data report, the labels analysis, the model's metrics)."""
    if outcome.summary:
        return {k: v for k, v in outcome.summary.items() if k != "summary"}
    for output in outcome.outputs:
        if output.endswith(("report.json", "analysis.json", "metrics.json")):
            try:
                document = json.loads((build_dir / output).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(document, dict):
                return dict(document.get("label_model", document))
    return {}


def key_metrics(stage: str, m: dict[str, Any]) -> dict[str, Any]:
    """A few numbers per stage: rows per split; rows labelled and the label model's
    accuracy; steps, loss and each evaluation's headline; a merge's or selection's pick."""
    kind = stage.split(":", 1)[0]
    if kind == "data" and isinstance(m.get("splits"), dict):
        return {"rows": dict(m["splits"])}
    if kind == "labels":
        keys = ("rows", "covered", "accuracy_covered", "accuracy_all")
        return {k: _rounded(m[k]) for k in keys if k in m}
    out: dict[str, Any] = {}
    train = m.get("train") if isinstance(m.get("train"), dict) else {}
    if train:
        out["steps"] = train.get("steps")
        loss = (
            train.get("final_loss")
            if train.get("final_loss") is not None
            else train.get("mean_loss")
        )
        if loss is not None:
            out["loss"] = _rounded(loss)
    for split, result in (m.get("eval") or {}).items():
        for metric in ("accuracy", "macro_f1", "perplexity", "loss"):
            if isinstance(result, dict) and isinstance(result.get(metric), int | float):
                out[f"{metric}@{split}"] = _rounded(result[metric])
                break
    if isinstance(m.get("selection"), dict):
        out["chosen"] = m["selection"].get("chosen")
    return out


def _gates(stage: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("line", "metric", "op", "bound", "measured", "passed", "ci_low", "ci_high",
            "confidence", "decided_by", "why")  # fmt: skip
    return [
        {"stage": stage} | {k: _rounded(g.get(k)) for k in keys}
        for g in m.get("gates") or []
        if isinstance(g, dict)
    ]


def _versus(stage: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    """The cost model's predictions beside what the run measured: the training memory
    peak, and each latency measured on this machine."""
    rows: list[dict[str, Any]] = []
    memory = m.get("memory")
    if isinstance(memory, dict) and (memory.get("measured") or memory.get("predicted")):
        measured, predicted = memory.get("measured") or {}, memory.get("predicted") or {}
        rows.append({
            "stage": stage, "what": "training memory peak (GiB)",
            "measured": _gib(measured.get("peak")),
            "predicted": _gib(predicted.get("allocated", predicted.get("peak"))),
        })  # fmt: skip
    estimates = m.get("predicted")
    estimates = estimates if isinstance(estimates, dict) else {}
    latencies = m.get("latency")
    for hardware, latency in (latencies if isinstance(latencies, dict) else {}).items():
        if isinstance(latency, dict) and latency.get("measured"):
            guess = estimates.get(f"latency@{hardware}")  # the verifier's, as it shows it
            rows.append({
                "stage": stage, "what": f"latency p95 on {hardware} (ms)",
                "measured": _rounded(latency.get("p95_ms")),
                "predicted": guess if isinstance(guess, int | float | str) else None,
            })  # fmt: skip
    return rows


def _artifacts(build_dir: Path, report: RunReport) -> dict[str, str]:
    out = {"build": shown_path(build_dir), "report": shown_path(build_dir / "run/report.json")}
    if (build_dir / "run/report.html").is_file():  # its pictures (`backends/report/`)
        out["pictures"] = shown_path(build_dir / "run/report.html")
    if report.logs:
        out["logs"] = shown_path(build_dir / "run/logs")
    for outcome in report.outcomes:
        for output in outcome.outputs:
            if output.endswith((".html", "adapter")):
                out[f"{outcome.stage} {Path(output).name}"] = shown_path(build_dir / output)
    if (build_dir / "registry").is_dir():
        out["registry"] = shown_path(build_dir / "registry")
    return out


def _gib(value: Any) -> float | None:
    return round(value / GIB, 4) if isinstance(value, int | float) else None


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits: a summary, not the record (metrics.json has it)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
