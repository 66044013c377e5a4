"""The merge stage of `fmc run`: a `merge` block's recipe applied to its parents' trained
adapters (compatibility checked on the real files first), the merged adapter evaluated on
the merge's `eval` splits, its gates checked, and the result registered with its parents.
"""

from __future__ import annotations

import json
from typing import Any

from fmlang.atomic import write_json_atomic
from fmlang.backends.cache import stage_key
from fmlang.backends.data.stages import Outcome, RunContext
from fmlang.backends.model_stage import apply_gates, flat_metrics, model_paths, read_artifact
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import Merge
from fmlang.lower.labels import split_path


def merge_paths(merge: str) -> dict[str, str]:
    base = f"run/merges/{merge}"
    return {"adapter": f"{base}/adapter", "metrics": f"{base}/metrics.json"}


def merge_stage(ctx: RunContext, merge: Merge, knobs: dict[str, int | str]) -> Outcome:
    from fmlang.backends.merge import merge_adapters
    from fmlang.backends.train.job import TrainJob
    from fmlang.backends.train.loader import load_model

    stage = f"merge:{merge.name}"
    recipe = read_artifact(ctx, f"merges/{merge.name}.json", merge)  # the build's recipe
    parents = {name: ctx.cache.key_of(f"train:{name}") for name in merge.models}
    missing = [name for name, key in parents.items() if key is None]
    if missing:
        raise StageError(_untrained(merge, missing))
    key = stage_key("merge", recipe, parents)
    paths = merge_paths(merge.name)
    ctx.access.require(stage, [model_paths(name)["adapter"] for name in merge.models])
    if not ctx.force and ctx.cache.fresh(stage, key):
        cached = json.loads((ctx.build_dir / paths["metrics"]).read_text(encoding="utf-8"))
        apply_gates(ctx, merge.name, cached)
        return Outcome(stage, True, tuple(paths.values()), cached)
    first = TrainJob.read(ctx.build_dir / model_paths(merge.models[0])["job"])
    dirs = {name: ctx.build_dir / model_paths(name)["adapter"] for name in merge.models}
    out = ctx.build_dir / paths["adapter"]
    span = merge.span.to_span() if merge.span else None
    merge_adapters(recipe, load_model(first), dirs, out, span=span)
    ctx.log(f"  merged {', '.join(merge.models)} with {recipe['method']}")
    metrics = _evaluate(ctx, merge, first, out)
    apply_gates(ctx, merge.name, metrics)  # adds metrics["gates"]
    write_json_atomic(ctx.build_dir / paths["metrics"], metrics)
    ctx.cache.record(stage, key, list(paths.values()))
    return Outcome(stage, False, tuple(paths.values()), metrics)


def _evaluate(ctx: RunContext, merge: Merge, first: Any, adapter: Any) -> dict[str, Any]:
    """The merged adapter, evaluated like a trained one on the merge's own splits."""
    from fmlang.backends.train.evaluate import evaluate

    evaluation = merge.evaluation
    refs = evaluation.on if evaluation else ()
    job = first.model_copy(
        update={
            "model": merge.name,
            "eval_data": {
                _name(r.dataset, r.split): str(ctx.build_dir / split_path(r.dataset, r.split))
                for r in refs
            },
            "group_by": tuple(evaluation.by) if evaluation else (),
        }
    )
    metrics: dict[str, Any] = {"eval": {}}
    for split in job.eval_data:
        metrics["eval"][split] = evaluate(job, adapter, split)
    metrics["scalars"] = flat_metrics(metrics)
    return metrics


def _name(dataset: str, split: str | None) -> str:
    return f"{dataset}.{split}" if split else dataset


def _untrained(merge: Merge, missing: list[str]) -> Any:
    return error(
        "FM0710",
        f"merge `{merge.name}` needs its parents trained first: {', '.join(missing)}",
        merge.span.to_span() if merge.span else None,
        "merges adapters that do not exist yet",
        help="run `fmc run FILE` without --until, so the train stage runs first",
    )
