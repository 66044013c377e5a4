"""The merge stage of `fmc run`: a `merge` block's recipe applied to its parents' trained
adapters (compatibility checked on the real files first), the merged adapter evaluated on
the merge's `eval` splits, its gates checked, and the result registered with its parents.

The merged adapter is a registry version of kind "merge": its lineage names each parent's
registered version (the one its metrics.json records), the recipe's settings, its metrics,
and its gates' results, so `fmc log` shows where it came from and `fmc serve` serves it only
when its gates passed. A cached merge from before merges were registered is registered on
the next run.
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
    from fmlang.backends.train.fisher import is_fisher_folder, merge_folders
    from fmlang.backends.train.job import TrainJob
    from fmlang.backends.train.loader import load_model

    stage = f"merge:{merge.name}"
    recipe = read_artifact(ctx, f"merges/{merge.name}.json", merge)  # the build's recipe
    parents = {name: ctx.cache.key_of(f"train:{name}") for name in merge.models}
    missing = [name for name, key in parents.items() if key is None]
    if missing:
        raise StageError(_untrained(merge, missing))
    key = stage_key("merge", recipe, parents)
    explain = {f"stage `train:{name}`": str(k)[:12] for name, k in parents.items()}
    paths = merge_paths(merge.name)
    ctx.access.require(stage, [model_paths(name)["adapter"] for name in merge.models])
    if not ctx.force and ctx.cache.fresh(stage, key, explain):
        cached = json.loads((ctx.build_dir / paths["metrics"]).read_text(encoding="utf-8"))
        if not _is_registered(ctx, cached):  # merged before merges were registered
            cached["registry"] = _register(ctx, merge, recipe, key, cached)
        apply_gates(ctx, merge.name, cached)
        return Outcome(stage, True, tuple(paths.values()), cached)
    first = TrainJob.read(ctx.build_dir / model_paths(merge.models[0])["job"])
    dirs = {name: ctx.build_dir / model_paths(name)["adapter"] for name in merge.models}
    out = ctx.build_dir / paths["adapter"]
    span = merge.span.to_span() if merge.span else None
    if all(is_fisher_folder(d) for d in dirs.values()):  # sparse diffs (`fisher_mask`)
        merge_folders(recipe, dirs, out, span)
    else:
        merge_adapters(recipe, load_model(first), dirs, out, span=span)
    ctx.log(f"  merged {', '.join(merge.models)} with {recipe['method']}")
    metrics = _evaluate(ctx, merge, first, out)
    metrics["registry"] = _register(ctx, merge, recipe, key, metrics)
    apply_gates(ctx, merge.name, metrics)  # adds metrics["gates"], recorded in the lineage
    write_json_atomic(ctx.build_dir / paths["metrics"], metrics)
    ctx.cache.record(stage, key, list(paths.values()), explain)
    return Outcome(stage, False, tuple(paths.values()), metrics)


def _register(
    ctx: RunContext, merge: Merge, recipe: dict[str, Any], key: str, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Register the merged adapter (kind "merge") with its parents' registered versions,
    the recipe's settings and its metrics; its gates follow in `apply_gates`."""
    from dataclasses import replace

    from fmlang.backends.registry import data_rows, merge_lineage, open_registry

    registry = open_registry(ctx.build_dir, create=True)
    parents = [_parent_version(ctx, registry, merge, name) for name in merge.models]
    lineage = merge_lineage(recipe, parents, ctx.access.spec_hash, key)
    lineage = replace(lineage, data_rows=data_rows(metrics))
    version = registry.register(ctx.build_dir / merge_paths(merge.name)["adapter"], lineage)
    registry.attach_metrics(version, flat_metrics(metrics))
    ctx.log(f"  registered {version.ref} ({version.short})")
    return {"hash": version.hash, "number": version.number}


def _is_registered(ctx: RunContext, metrics: dict[str, Any]) -> bool:
    from fmlang.backends.registry import REGISTRY_DIR, Registry

    digest = (metrics.get("registry") or {}).get("hash")
    registry = Registry(ctx.build_dir / REGISTRY_DIR)
    return digest is not None and any(v.hash == digest for v in registry.versions())


def _parent_version(ctx: RunContext, registry: Any, merge: Merge, name: str) -> Any:
    """The registered version of the adapter `fmc run` trained for parent `name` (its
    metrics.json names it); FM0857 when it is not in the registry."""
    try:
        path = ctx.build_dir / model_paths(name)["metrics"]
        digest = str(json.loads(path.read_text(encoding="utf-8"))["registry"]["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        digest = ""
    found = next((v for v in registry.versions(name) if v.hash == digest), None)
    if found is None:
        raise StageError(
            error(
                "FM0857",
                f"merge `{merge.name}` cannot be registered: the adapter trained for its "
                f"parent `{name}` is not in the registry",
                merge.span.to_span() if merge.span else None,
                "merges it",
                help=f"run `fmc run --force` so that `{name}` is trained and registered again",
            )
        )
    return found


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
