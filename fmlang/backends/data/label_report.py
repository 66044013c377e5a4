"""Pictures of a label matrix: each labeling function's coverage, overlaps, conflicts and
accuracy as a PNG, and a self-contained HTML report around it.

Written by the labels stage (`run/labels/<labels>.report.png` and `.report.html`) and by
every `apply_to` stage (`run/labels/<labels>/<dataset>/<split>.report.*`) from what they
wrote already: the analysis JSON (per-function figures, the label model's accuracy) and the
rows' `lf_*` columns (for the pairwise overlap map). The HTML embeds the PNG as a data URI,
loads nothing from the network and escapes every text it shows. matplotlib (Agg backend) is
imported here only.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from fmlang.atomic import replacing, write_text_atomic
from fmlang.lower.labels import ABSTAIN, lf_column

PANELS = (("coverage", "coverage"), ("overlaps", "overlaps"), ("conflicts", "conflicts"))


def report_paths(analysis: str) -> dict[str, str]:
    """The picture and the page beside an analysis JSON (paths relative to the build)."""
    base = analysis.removesuffix(".analysis.json")
    return {"picture": f"{base}.report.png", "report": f"{base}.report.html"}


def write_report(build_dir: Path, analysis: str, rows: str, title: str) -> dict[str, str]:
    """Write the PNG and the HTML for the analysis at `analysis` and the rows at `rows`
    (both relative to `build_dir`); their relative paths."""
    document = json.loads((build_dir / analysis).read_text(encoding="utf-8"))
    lfs = document["analysis"]["lfs"]
    overlap = _pairwise_overlap(build_dir / rows, [lf["name"] for lf in lfs])
    paths = report_paths(analysis)
    png = _picture(lfs, overlap, title)
    with replacing(build_dir / paths["picture"]) as tmp:
        tmp.write_bytes(png)
    write_text_atomic(build_dir / paths["report"], _page(document, png, title))
    return paths


def _pairwise_overlap(rows: Path, names: list[str]) -> np.ndarray:
    """Share of rows where both functions vote, for every pair (the diagonal: coverage)."""
    import pyarrow.parquet as pq

    table = pq.read_table(rows, columns=[lf_column(n) for n in names])
    if not names or table.num_rows == 0:
        return np.zeros((len(names), len(names)))
    fired = np.stack([table.column(lf_column(n)).to_numpy() != ABSTAIN for n in names], axis=1)
    fired = fired.astype(np.float64)
    return np.asarray(fired.T @ fired / table.num_rows)


def _accuracy(lf: dict[str, Any]) -> tuple[float | None, str]:
    if lf.get("accuracy") is not None:
        return float(lf["accuracy"]), "accuracy (gold)"
    if lf.get("learned_accuracy") is not None:
        return float(lf["learned_accuracy"]), "accuracy (learned)"
    return None, "accuracy"


def _picture(lfs: list[dict[str, Any]], overlap: np.ndarray, title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [lf["name"] for lf in lfs]
    height = max(3.0, 0.32 * len(names) + 1.5)
    figure, axes = plt.subplots(1, 5, figsize=(20, height), width_ratios=[1, 1, 1, 1, 1.4])
    positions = np.arange(len(names))
    for axis, (key, label) in zip(axes[:3], PANELS, strict=False):
        axis.barh(positions, [lf[key] for lf in lfs], color="#4c72b0")
        _bars(axis, positions, names, label, show_names=key == "coverage")
    accuracy = [_accuracy(lf) for lf in lfs]
    values = [a if a is not None else 0.0 for a, _ in accuracy]
    colors = ["#55a868" if a is not None and a >= 0.5 else "#c44e52" for a, _ in accuracy]
    axes[3].barh(positions, values, color=colors)
    axes[3].axvline(0.5, color="grey", linewidth=0.8, linestyle="--")
    _bars(axes[3], positions, names, next((t for a, t in accuracy if a is not None), "accuracy"),
          show_names=False)  # fmt: skip
    image = axes[4].imshow(overlap, cmap="Blues", vmin=0.0, aspect="auto")
    axes[4].set_xticks(positions, names, rotation=90, fontsize=7)
    axes[4].set_yticks(positions, names, fontsize=7)
    axes[4].set_title("rows where both vote")
    figure.colorbar(image, ax=axes[4], fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _bars(axis: Any, positions: np.ndarray, names: list[str], label: str, show_names: bool) -> None:
    axis.set_xlim(0.0, 1.0)
    axis.set_yticks(positions, names if show_names else [""] * len(names), fontsize=8)
    axis.invert_yaxis()
    axis.set_title(label)


def _page(document: dict[str, Any], png: bytes, title: str) -> str:
    analysis = document["analysis"]
    classes = analysis.get("classes", [])
    rows = "\n".join(_row(lf, classes) for lf in analysis["lfs"])
    totals = analysis["totals"]
    model = document.get("label_model", {})
    image = base64.b64encode(png).decode("ascii")
    warnings = "".join(
        f"<li>{_e(w.get('code', ''))}: {_e(w.get('message', ''))}</li>"
        for w in analysis.get("warnings", [])
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p>{totals["rows"]:,} rows; at least one function votes on {_pct(totals["coverage"])},
two or more on {_pct(totals["overlaps"])}, and they disagree on {_pct(totals["conflicts"])}.
{_e(_model_line(model))}</p>
<img alt="coverage, overlaps, conflicts and accuracy of each labeling function" src="data:image/png;base64,{image}">
<h2>Labeling functions</h2>
<table>
<tr><th>function</th><th>votes for</th><th>fires</th><th>coverage</th><th>overlaps</th><th>conflicts</th><th>correct</th><th>incorrect</th><th>accuracy</th><th>learned accuracy</th></tr>
{rows}
</table>
{f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else ""}
</body>
</html>
"""  # noqa: E501


def _row(lf: dict[str, Any], classes: list[str]) -> str:
    polarity = ", ".join(classes[c] for c in lf.get("polarity", []) if c < len(classes))
    cells = [
        _e(lf["name"]),
        _e(polarity or "-"),
        str(lf["fires"]),
        _pct(lf["coverage"]),
        _pct(lf["overlaps"]),
        _pct(lf["conflicts"]),
        _count(lf.get("correct")),
        _count(lf.get("incorrect")),
        _pct(lf.get("accuracy")),
        _pct(lf.get("learned_accuracy")),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _model_line(model: dict[str, Any]) -> str:
    if "accuracy_all" not in model:
        return (
            f"The label model labels {model.get('covered', 0):,} of {model.get('rows', 0):,} rows."
        )
    return (
        f"Label model against the gold labels: {model['accuracy_covered']:.1%} on the "
        f"{model['covered']:,} rows it labels, {model['accuracy_all']:.1%} on all rows "
        "(rows without a label count as wrong)."
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
