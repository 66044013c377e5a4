"""Merge recipes: a `merge` block lowered to `merges/<merge>.json`, what the merge backend runs.

Every method acts on the parents' task vectors, the weight updates ΔW = B·A·scale of their
LoRA adapters, as the papers and the reference define them (`linear` is a weighted average
of the updates). peft's own `linear`, `ties`, `dare_*` and `magnitude_prune` combination
types combine the A and B factors separately, which is not a combination of the updates:
two identical adapters averaged with weights (0.5, 0.5) come back with twice the update.
The recipe therefore names the peft combination type that computes the method on ΔW and
factors the result back to a LoRA of the parents' common rank by SVD (`svd`, `ties_svd`,
`dare_ties_svd`, `dare_linear_svd`, `magnitude_prune_svd`); `cat` stays exact at the summed
rank. Pure: no torch.
"""

from __future__ import annotations

from typing import Any

# SAME_RANK_METHODS is defined with the checker's tables and re-exported for the executor.
from fmlang.check.schema import SAME_RANK_METHODS as SAME_RANK_METHODS
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.base import Knob, Scalar
from fmlang.ir.nodes import Merge, Model, Spec

RECIPE_SCHEMA = "1"

# fmc method → the peft `add_weighted_adapter` combination type that computes it on ΔW.
COMBINATION_TYPES: dict[str, str] = {
    "linear": "svd",
    "task_arithmetic": "svd",
    "ties": "ties_svd",
    "dare_ties": "dare_ties_svd",
    "dare_linear": "dare_linear_svd",
    "magnitude_prune": "magnitude_prune_svd",
    "svd": "svd",
    "cat": "cat",
}
DENSITY_METHODS = ("ties", "dare_ties", "dare_linear", "magnitude_prune")
SIGN_METHODS = ("ties", "dare_ties")
DEFAULT_DENSITY = 1.0  # keep every entry unless the spec says otherwise
DEFAULT_SEED = 0  # DARE drops entries at random; a fixed seed keeps merges reproducible


def lower_merge(spec: Spec, merge: Merge, knobs: dict[str, Any]) -> dict[str, Any]:
    """The merge recipe for `merge`, with the solver's `knobs` (`<model>.rank`, ...)."""
    parents = [_parent(spec, name, knobs) for name in merge.models]
    ranks = [p["rank"] for p in parents if isinstance(p["rank"], int)]
    recipe: dict[str, Any] = {
        "schema_version": RECIPE_SCHEMA,
        "merge": merge.name,
        "output": merge.name,
        "method": merge.method,
        "combination_type": COMBINATION_TYPES.get(merge.method, merge.method),
        "weights": _weights(merge),
        "parents": parents,
        "rank": _merged_rank(merge, ranks),
        "seed": DEFAULT_SEED,
        "base_model": _base_model(spec, parents),
        "task": _task(spec, merge),
    }
    if merge.method in DENSITY_METHODS:
        recipe["density"] = float(_option(merge, "density", DEFAULT_DENSITY))
    if merge.method in SIGN_METHODS:
        recipe["majority_sign_method"] = "total"
    if recipe["combination_type"] != "cat":
        recipe["svd_rank"] = recipe["rank"]
    return recipe


def _option(merge: Merge, name: str, default: Scalar) -> Scalar:
    for option in merge.method_options:
        if option.name == name and isinstance(option.value, (int, float, str, bool)):
            return option.value
    return default


def _weights(merge: Merge) -> list[float]:
    """As written; 1/n each for `linear` and 1 each otherwise when the spec gives none.
    `linear` is a weighted average, so its weights are divided by their sum."""
    count = len(merge.models)
    if not merge.weights:
        default = 1.0 / count if merge.method == "linear" and count else 1.0
        return [default] * count
    weights = [float(w) for w in merge.weights]
    if merge.method != "linear":
        return weights
    total = sum(weights)
    if abs(total) < 1e-12:
        raise StageError(
            error(
                "FM0846",
                f"the weights of the `linear` merge `{merge.name}` sum to zero",
                merge.span.to_span() if merge.span else None,
                "a weighted average divides by the sum of the weights",
                help="use weights with a positive sum, or `method task_arithmetic` to add "
                "weighted task vectors as they are",
            )
        )
    return [w / total for w in weights]


def _knob(knob: Knob | None, key: str, knobs: dict[str, Any]) -> Scalar | None:
    if key in knobs:
        value: Scalar | None = knobs[key]
        return value
    return knob.fixed if knob is not None else None


def _parent(spec: Spec, name: str, knobs: dict[str, Any]) -> dict[str, Any]:
    model = spec.model(name)
    adapter = model.adapter if model else None
    rank = _knob(adapter.rank if adapter else None, f"{name}.rank", knobs)
    alpha = _knob(adapter.alpha if adapter else None, f"{name}.alpha", knobs)
    return {
        "model": name,
        "base": model.base if model else None,
        "kind": adapter.kind if adapter else None,
        "rank": int(rank) if isinstance(rank, (int, float)) else None,
        "alpha": float(alpha) if isinstance(alpha, (int, float)) else None,
        "targets": sorted(adapter.targets) if adapter else [],
        "config": f"adapters/{name}/adapter_config.json",
    }


def _merged_rank(merge: Merge, ranks: list[int]) -> int | None:
    if not ranks:
        return None
    if merge.method == "cat":
        return sum(ranks)
    if merge.method in SAME_RANK_METHODS and len(set(ranks)) == 1:
        return ranks[0]  # the parents' common rank (the checker refuses different ones)
    chosen = _option(merge, "rank", max(ranks)) if merge.method == "svd" else max(ranks)
    return int(chosen) if isinstance(chosen, (int, float)) else max(ranks)


def _base_model(spec: Spec, parents: list[dict[str, Any]]) -> dict[str, Any] | None:
    names = sorted({p["base"] for p in parents if p["base"]})
    base = spec.base_model(names[0]) if names else None
    if base is None:
        return None
    weights = base.weights
    return {
        "name": base.name,
        "weights": None
        if weights is None
        else {"kind": weights.kind, "location": weights.location, "revision": weights.revision},
    }


def _task(spec: Spec, merge: Merge) -> str | None:
    models = [spec.model(name) for name in merge.models]
    kinds = {m.task.kind for m in models if isinstance(m, Model) and m.task is not None}
    return kinds.pop() if len(kinds) == 1 else None
