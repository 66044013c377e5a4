"""The select stage of `fmc run`: a model with `base auto in [...]` (or `adapter auto in
[...]`) picks its base and adapter.

Each candidate the verifier kept is an ordinary model `m+c` (`fmlang.ir.selection`) whose
`train:m+c` stage runs first, smallest first by parameter count (`train_stages`): trained,
evaluated on every `eval` split, registered under its own name and cached like any model.
The stage `train:m` then reads `train/m/selection.json` (the build folder is what runs) and
each candidate's metrics, and picks by the objective: the highest `METRIC` on the `select by`
split (the lowest for perplexity and loss), ties to the smaller model, then the name.

The winner is laid out as if `m` had been trained with its base: `run/models/m/adapter` (a
copy of the candidate's adapter), `run/models/m/job.json` (the candidate's job, so that
`fmc serve` and the lock find its base weights) and `run/models/m/metrics.json` (the
candidate's metrics plus `selection`: every candidate's value, the chosen one, the dropped).
`m`'s runtime gates are checked on those metrics; the registry's `selected` pointer names
the chosen candidate's version. The stage's cache key is the selection file and the
candidates' own keys, so a rerun with nothing changed does not retrain or reselect.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from functools import partial
from typing import Any

from fmlang.atomic import write_json_atomic
from fmlang.backends.cache import stage_key, writing
from fmlang.backends.data.stages import Outcome, RunContext
from fmlang.backends.model_stage import apply_gates, model_paths, read_artifact, train_stage
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import Model, Spec
from fmlang.lower.selection import selection_path

# `select by` names → the key evaluation writes (`f1` is macro F1, as in the gates' default)
METRIC_KEYS = {"accuracy": "accuracy", "f1": "macro_f1", "macro_f1": "macro_f1",
               "perplexity": "perplexity", "loss": "loss"}  # fmt: skip


def train_stages(
    ctx: RunContext, spec: Spec, knobs: dict[str, int | str]
) -> list[tuple[str, Callable[[], Outcome]]]:
    """Every trained model's stage in spec order, a selection model's candidates (smallest
    first, as its selection file lists them) right before its select stage."""
    stages: list[tuple[str, Callable[[], Outcome]]] = []
    for model in spec.models:
        if model.training is None or model.candidate_of is not None:
            continue
        if model.selection is not None:
            for name in candidate_order(ctx, model):
                candidate = spec.model(name)
                if candidate is not None:
                    stages.append((f"train:{name}", partial(train_stage, ctx, candidate, knobs)))
            stages.append((f"train:{model.name}", partial(select_stage, ctx, model)))
        else:
            stages.append((f"train:{model.name}", partial(train_stage, ctx, model, knobs)))
    return stages


def candidate_order(ctx: RunContext, model: Model) -> list[str]:
    document = read_artifact(ctx, selection_path(model.name), model)
    return [str(c["model"]) for c in document.get("candidates", [])]


def select_stage(ctx: RunContext, model: Model) -> Outcome:
    stage = f"train:{model.name}"
    document = read_artifact(ctx, selection_path(model.name), model)
    candidates = [dict(c) for c in document.get("candidates", [])]
    upstream = {f"train:{c['model']}": ctx.cache.key_of(f"train:{c['model']}") for c in candidates}
    key = stage_key("select", document, upstream)
    explain = {"selection": stage_key(document)[:12]} | {
        k: (v or "none")[:12] for k, v in upstream.items()
    }
    paths = model_paths(model.name)
    ctx.access.require(stage, [])
    if not ctx.force and ctx.cache.fresh(stage, key, explain):
        cached = json.loads((ctx.build_dir / paths["metrics"]).read_text(encoding="utf-8"))
        _log(ctx, cached["selection"])
        apply_gates(ctx, model.name, cached)
        return Outcome(stage, True, tuple(paths.values()), cached)
    scored = [_scored(ctx, model, document, c) for c in candidates]
    chosen = pick(scored, bool(document.get("lowest_wins")))
    if chosen is None:
        raise StageError(_nothing_measured(model, document, scored))
    selection = {
        "metric": document["metric"], "on": document["on"],
        "lowest_wins": bool(document.get("lowest_wins")), "chosen": key_of(chosen),
        "chosen_model": chosen["model"], "candidates": scored,
        "dropped": list(document.get("dropped", [])),
    }  # fmt: skip
    metrics = _lay_out(ctx, model, chosen, selection)
    selection["registry"] = _mark_chosen(ctx, model, chosen)
    _log(ctx, selection)
    apply_gates(ctx, model.name, metrics)
    with writing(f"`{stage}`"):
        write_json_atomic(ctx.build_dir / paths["metrics"], metrics)
    ctx.cache.record(stage, key, list(paths.values()), explain)
    return Outcome(stage, False, tuple(paths.values()), metrics)


def _scored(
    ctx: RunContext, model: Model, document: dict[str, Any], candidate: dict[str, Any]
) -> dict[str, Any]:
    """The candidate with its objective value (None when its evaluation lacks it) and every
    metric it measured on every split."""
    path = ctx.build_dir / model_paths(str(candidate["model"]))["metrics"]
    metrics = json.loads(path.read_text(encoding="utf-8"))
    evaluated = metrics.get("eval", {})
    value = evaluated.get(document["on"], {}).get(METRIC_KEYS.get(document["metric"], ""))
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return {
        **candidate,
        "value": float(value) if finite else None,
        "metrics": {split: {k: v for k, v in values.items() if isinstance(v, (int, float))}
                    for split, values in evaluated.items()},
        "registry": metrics.get("registry"),
    }  # fmt: skip


def pick(scored: list[dict[str, Any]], lowest_wins: bool) -> dict[str, Any] | None:
    """The best value; ties to the fewer parameters, then the key. None if none measured."""
    measured = [c for c in scored if c["value"] is not None]
    if not measured:
        return None
    sign = 1.0 if lowest_wins else -1.0
    return min(measured, key=lambda c: (sign * c["value"], c.get("params") or 0, key_of(c)))


def key_of(candidate: dict[str, Any]) -> str:
    """The candidate's key (`tiny_b`, `lora`, `tiny_b+lora`); `base` in files written before
    adapters could be selected."""
    return str(candidate.get("candidate") or candidate["base"])


def _lay_out(
    ctx: RunContext, model: Model, chosen: dict[str, Any], selection: dict[str, Any]
) -> dict[str, Any]:
    """The winner's adapter, job and metrics under `run/models/<model>/`."""
    source, target = model_paths(str(chosen["model"])), model_paths(model.name)
    build = ctx.build_dir
    with writing(f"selecting `{model.name}`"):
        shutil.rmtree(build / target["adapter"], ignore_errors=True)
        shutil.copytree(build / source["adapter"], build / target["adapter"])
        (build / target["job"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build / source["job"], build / target["job"])
    metrics = json.loads((build / source["metrics"]).read_text(encoding="utf-8"))
    metrics.pop("gates", None)  # the selection model's own gates are checked on them next
    metrics.pop("privacy", None)  # spent by the candidate's own stage, counted there
    metrics["selection"] = selection
    return dict(metrics)


def _mark_chosen(ctx: RunContext, model: Model, chosen: dict[str, Any]) -> dict[str, Any] | None:
    """The registry's `selected` pointer: `model` → the chosen candidate's version."""
    from fmlang.backends.registry import open_registry

    registered = chosen.get("registry")
    if not isinstance(registered, dict) or not registered.get("hash"):
        return None
    registry = open_registry(ctx.build_dir, create=True)
    version = registry.resolve(str(registered["hash"]))
    registry.set_pointer("selected", model.name, version)
    return {"hash": version.hash, "number": version.number, "name": version.name}


def _log(ctx: RunContext, selection: dict[str, Any]) -> None:
    word = "lowest" if selection["lowest_wins"] else "highest"
    ctx.log(f"  selected `{selection['chosen']}`: {word} {selection['metric']} on "
            f"{selection['on']}")  # fmt: skip
    for c in selection["candidates"]:
        value = "not measured" if c["value"] is None else f"{c['value']:.4g}"
        mark = " (chosen)" if key_of(c) == selection["chosen"] else ""
        ctx.log(f"    {key_of(c)}: {selection['metric']} {value}{mark}")
    for base in selection["dropped"]:
        ctx.log(f"    {base}: dropped by the static constraints (`fmc plan` says why)")


def _nothing_measured(model: Model, document: dict[str, Any], scored: list[dict[str, Any]]) -> Any:
    span = model.span.to_span() if model.span else None
    return error(
        "FM0890",
        f"model `{model.name}` cannot select a base: no candidate has a finite "
        f"{document['metric']} on `{document['on']}`",
        span,
        "nothing to compare",
        help="check that the split has rows with labels (or completions) for every candidate",
        notes=tuple(
            f"`{key_of(c)}`: measured {sorted(c['metrics'].get(document['on'], {}))}"
            for c in scored
        ),
    )
