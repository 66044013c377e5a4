"""The run report's HTML: one self-contained page (pictures embedded as base64 data URIs,
its style inline, no script, nothing loaded from the network), each section followed by the
numbers it draws, every text escaped. A section with nothing to show is left out."""

from __future__ import annotations

import base64
import html
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from fmlang.backends.report import figures
from fmlang.backends.report.inputs import GroupView, RunInputs, mapping


@dataclass(frozen=True)
class Picture:
    name: str  # file name under `run/report/`
    data: bytes  # PNG


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em;
       max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; }
img { max-width: 100%; display: block; margin: 0.4em 0; }
.pass { color: #2e7d32; } .fail { color: #c62828; font-weight: bold; } .none { color: #777; }
nav a { margin-right: 1em; }
"""


def page(title: str, inputs: RunInputs, pictures: list[Picture]) -> str:
    """The whole page; the pictures it draws are appended to `pictures`."""
    sections = [
        ("labeling-functions", "Labeling functions", _labeling_functions(inputs, pictures)),
        ("label-model", "Label model against gold", _label_model(inputs, pictures)),
        ("training", "Training and evaluation", _training(inputs, pictures)),
        ("gates", "Gates", _gates(inputs)),
        ("groups", "Groups and fairness", _groups(inputs, pictures)),
        ("resources", "Predicted against measured", _resources(inputs, pictures)),
    ]
    shown = [(key, heading, body) for key, heading, body in sections if body]
    nav = " ".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading, _ in shown)
    body = "\n".join(f'<section id="{key}">\n<h2>{_e(heading)}</h2>\n{text}\n</section>'
                     for key, heading, text in shown)  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<nav>{nav}</nav>
<section id="stages">
<h2>Stages</h2>
{_stages(inputs)}
</section>
{body}
</body>
</html>
"""


def _stages(inputs: RunInputs) -> str:
    rows = [[_e(s["stage"]), "cached" if s.get("skipped") else "ran",
             _e(s.get("reason") or ("unchanged" if s.get("skipped") else ""))]
            for s in inputs.stages]  # fmt: skip
    return _table(["stage", "status", "why it ran"], rows)


def _labeling_functions(inputs: RunInputs, pictures: list[Picture]) -> str:
    parts = []
    for labels in inputs.labels:  # the fitted labels; each `apply_to` target has its own page
        data = None if "@" in labels.stage else figures.lf_picture(labels)
        if data is None:
            continue
        totals = mapping(labels.analysis["analysis"].get("totals"))
        text = (f"{_count(totals.get('rows'))} rows: at least one function votes on "
                f"{_pct(totals.get('coverage'))}, two or more on {_pct(totals.get('overlaps'))}, "
                f"and they disagree on {_pct(totals.get('conflicts'))}.")  # fmt: skip
        if labels.page:
            link = posixpath.relpath(labels.page, "run")  # from run/report.html
            text += f' Every function\'s numbers: <a href="{_e(link)}">{_e(link)}</a>.'
        alt = f"coverage, overlaps, conflicts and accuracy per labeling function of {labels.stage}"
        parts.append(f"<h3>{_e(labels.stage)}</h3>\n<p>{text}</p>\n"
                     + _figure(pictures, f"{_slug(labels.stage)}.lfs.png", data, alt))  # fmt: skip
    return "\n".join(parts)


def _label_model(inputs: RunInputs, pictures: list[Picture]) -> str:
    data = figures.label_model_picture(inputs.labels)
    if data is None:
        return ""
    rows = []
    for labels in inputs.labels:
        model = labels.analysis.get("label_model") or {}
        if "accuracy_all" not in model:
            continue
        versus = labels.analysis.get("versus_majority") or {}
        rows.append([_e(labels.stage), _count(model.get("rows")), _count(model.get("covered")),
                     _pct(model.get("accuracy_covered")), _pct(model.get("accuracy_all")),
                     _count(versus.get("majority_covered")),
                     _pct(versus.get("majority_accuracy_covered"))])  # fmt: skip
    head = ["labels", "rows", "labelled", "accuracy (labelled)", "accuracy (all rows)",
            "majority vote labelled", "majority vote accuracy"]  # fmt: skip
    picture = _figure(pictures, "label-model.png", data, "label model accuracy against @gold")
    return picture + _table(head, rows, numeric=(1, 2, 3, 4, 5, 6))


def _training(inputs: RunInputs, pictures: list[Picture]) -> str:
    rows = []
    for model in inputs.models:
        train = mapping(model.metrics.get("train"))
        loss = (
            train.get("final_loss")
            if train.get("final_loss") is not None
            else train.get("mean_loss")
        )
        for split, result in (model.metrics.get("eval") or {}).items():
            if isinstance(result, dict):
                rows.append([_e(model.stage), _count(train.get("steps")), _num(loss), _e(split),
                             _count(result.get("rows")), _headline(result)])  # fmt: skip
        if not model.metrics.get("eval") and train:
            rows.append([_e(model.stage), _count(train.get("steps")), _num(loss), "-", "-", "-"])
    if not rows:
        return ""
    data = figures.training_picture(inputs.models)
    picture = (
        "" if data is None else _figure(pictures, "training.png", data, "training loss by step")
    )
    head = ["model", "steps", "training loss", "evaluated on", "rows", "result"]
    return picture + _table(head, rows, numeric=(1, 2, 4))


def _headline(result: dict[str, Any]) -> str:
    shown = [f"{name} {result[key]:.4g}" for key, name in
             (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("perplexity", "perplexity"))
             if isinstance(result.get(key), int | float)]  # fmt: skip
    return ", ".join(shown) or "-"


def _gates(inputs: RunInputs) -> str:
    rows = []
    for model in inputs.models:
        for gate in model.metrics.get("gates") or []:
            if isinstance(gate, dict):
                required = f"{_e(gate.get('op'))} {_num(gate.get('bound'))}"
                rows.append([_e(model.stage), _count(gate.get("line")), _e(_gate_name(gate)),
                             required, _num(gate.get("measured")), _interval(gate),
                             _verdict(gate)])  # fmt: skip
    head = ["model", "line", "constraint", "required", "measured", "interval", "verdict"]
    return _table(head, rows, numeric=(1, 4)) if rows else ""


def _gate_name(gate: dict[str, Any]) -> str:
    if gate.get("by"):
        return f"max_gap({gate.get('of')}, by = {gate['by']}) on {gate.get('split') or '-'}"
    return str(gate.get("metric"))


def _interval(gate: dict[str, Any]) -> str:
    low, high, level = gate.get("ci_low"), gate.get("ci_high"), gate.get("confidence")
    if not all(isinstance(v, int | float) for v in (low, high, level)):
        return "-"
    return f"[{low:.4g}, {high:.4g}] at {level:.0%}"


def _verdict(gate: dict[str, Any]) -> str:
    passed = gate.get("passed")
    if passed is None:
        return f'<span class="none">not checked: {_e(gate.get("why") or "")}</span>'
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


def _groups(inputs: RunInputs, pictures: list[Picture]) -> str:
    parts = []
    for model in inputs.models:
        for view in model.groups:
            name = f"{_slug(model.stage)}.{_slug(view.split)}.{_slug(view.by)}.png"
            alt = f"{view.metric} of each {view.by} group of {model.stage} on {view.split}"
            parts.append(f"<h3>{_e(model.stage)}: {_e(view.metric)} by {_e(view.by)} on "
                         f"{_e(view.split)}</h3>\n{_gate_line(view)}"
                         + _figure(pictures, name, figures.groups_picture(model, view), alt)
                         + _group_table(view))  # fmt: skip
    return "\n".join(parts)


def _gate_line(view: GroupView) -> str:
    gate = view.gate
    if gate is None:
        return "<p>No fairness constraint on this column; each group's 95% interval.</p>\n"
    required = f"{_e(_gate_name(gate))} {_e(gate.get('op'))} {_num(gate.get('bound'))}"
    measured = f"gap {_num(gate.get('measured'))} {_interval(gate)}"
    return f"<p>{required}: {measured}, {_verdict(gate)}.</p>\n"


def _group_table(view: GroupView) -> str:
    rows = []
    for name in sorted(view.values):
        interval = view.intervals.get(name)
        shown = (
            f"[{interval.low:.4g}, {interval.high:.4g}] ({interval.method})" if interval else "-"
        )
        rows.append(
            [_e(name), _num(view.values[name]), shown, _count(interval.n if interval else None)]
        )
    return _table(["group", view.metric, "95% interval", "rows"], rows, numeric=(1, 3))


def _resources(inputs: RunInputs, pictures: list[Picture]) -> str:
    rows = []
    for model in inputs.models:
        for term, predicted, measured in figures.memory_rows(model):
            rows.append([_e(model.stage), f"training memory: {_e(term)}", _unit(predicted, "MiB"),
                         _unit(measured, "MiB"), ""])  # fmt: skip
        for hardware, guess, p50, p95 in figures.latency_rows(model):
            load = ((model.metrics.get("latency") or {}).get(hardware) or {}).get("load") or {}
            note = "measured while other processes used the cores" if load.get("loaded") else ""
            what = f"latency on {_e(hardware)} (p95; p50 {_unit(p50, 'ms')})"
            rows.append([_e(model.stage), what, _unit(guess, "ms"), _unit(p95, "ms"), _e(note)])
    if not rows:
        return ""
    data = figures.resources_picture(inputs.models)
    picture = (
        "" if data is None else _figure(pictures, "resources.png", data, "predicted vs measured")
    )
    head = ["model", "what", "predicted", "measured", "note"]
    return picture + _table(head, rows, numeric=(2, 3))


def _figure(pictures: list[Picture], name: str, data: bytes, alt: str) -> str:
    pictures.append(Picture(name, data))
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">\n'


def _table(head: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    """Cells are HTML already (escaped by the caller); the `numeric` columns align right."""

    def cell(tag: str, k: int, value: str) -> str:
        return f'<{tag} class="num">{value}</{tag}>' if k in numeric else f"<{tag}>{value}</{tag}>"

    header = "".join(cell("th", k, _e(h)) for k, h in enumerate(head))
    lines = ["<tr>" + "".join(cell("td", k, v) for k, v in enumerate(r)) + "</tr>" for r in rows]
    return f"<table>\n<tr>{header}</tr>\n" + "\n".join(lines) + "\n</table>\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _unit(value: float | None, unit: str) -> str:
    return f"{figures.short(value)} {unit}" if value is not None else "-"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
