"""Model selection in the IR: `base auto in [a, b]` and/or `adapter auto in [x(...), y(...)]`
with `select by METRIC on SPLIT`.

A selection model `m` has no base of its own. Its candidates are the pairs of a base and an
adapter (`Selection.options`: every base candidate with every adapter candidate; a fixed base
or adapter is the one side of the pair). `expand` gives every candidate `c` a model of its own,
`m+c` (`candidate_name`; `c` is the base, the adapter's kind or `base+kind`): a copy of `m`
with the candidate's base and adapter and `candidate_of = m`, placed right before `m`. The
candidates are then ordinary models for everything downstream: the verifier chooses their knobs
under `m`'s static constraints (memory, latency, throughput, cost, GPU hours and license,
copied to each candidate by `expand`), the build lowers one training job per candidate, and
`fmc run` trains each one as its own cached stage. `m` keeps its training settings (access,
privacy and data lineage read them) but is never lowered to a job: its stage picks the winner
(`fmlang.backends.select_stage`), and its runtime gates see the winner under `m`'s name. A
deployment of `m` serves the winner; the verifier holds its bounds for every candidate
(`fmlang.verify.encode`). Merging `m` is refused (`check/selection.py`).

The verifier drops the candidates that cannot meet the static constraints (`keep`, called by
`fmlang.verify.selection`); the dropped stay listed in `Selection.dropped`.
"""

from __future__ import annotations

from typing import Any

from fmlang.ir.nodes import Candidate, Constraint, Model, Spec

# Constraint kinds the verifier decides per base before training: each candidate must meet
# them (privacy constraints are about the data, which every candidate shares: checked once).
STATIC_KINDS = ("memory", "latency", "throughput", "cost", "gpu_hours", "license")
SEPARATOR = "+"


def candidate_name(model: str, base: str) -> str:
    """`spam_filter+minilm_l6`: a name no `.fm` identifier has, safe in paths and knob keys."""
    return f"{model}{SEPARATOR}{base}"


def is_selection(model: Model) -> bool:
    return model.selection is not None


def candidates_of(spec: Spec, model: str) -> tuple[Model, ...]:
    """The candidate models `expand` made for selection model `model`, in spec order."""
    return tuple(m for m in spec.models if m.candidate_of == model)


def expand(spec: Spec) -> Spec:
    """Add a candidate model per candidate base (before its selection model) and copy the
    selection model's static constraints to each. A spec without selections is returned as
    it is; an expanded one is never expanded twice."""
    if not any(is_selection(m) for m in spec.models) or any(m.candidate_of for m in spec.models):
        return spec
    models: list[Model] = []
    constraints: list[Constraint] = list(spec.constraints)
    for model in spec.models:
        if model.selection is not None:
            for option in model.selection.options:
                models.append(_candidate(model, option))
                constraints += [
                    c.model_copy(update={"target": candidate_name(model.name, option.key)})
                    for c in spec.constraints_on(model.name)
                    if c.kind in STATIC_KINDS
                ]
        models.append(model)
    return spec.model_copy(update={"models": tuple(models), "constraints": tuple(constraints)})


def _candidate(model: Model, option: Candidate) -> Model:
    return model.model_copy(
        update={
            "name": candidate_name(model.name, option.key),
            "base": option.base,
            "adapter": option.adapter or model.adapter,
            "selection": None,
            "candidate_of": model.name,
        }
    )


def keep(spec: Spec, model: str, survivors: tuple[str, ...]) -> Spec:
    """`spec` with only the `survivors` among `model`'s candidates (keys, and their copied
    constraints); the rest are listed in the selection's `dropped`."""
    selection_model = spec.model(model)
    assert selection_model is not None and selection_model.selection is not None
    selection = selection_model.selection
    gone = {candidate_name(model, b) for b in selection.candidates if b not in survivors}
    updated = selection_model.model_copy(
        update={
            "selection": selection.model_copy(
                update={
                    "candidates": tuple(b for b in selection.candidates if b in survivors),
                    "dropped": selection.dropped
                    + tuple(b for b in selection.candidates if b not in survivors),
                }
            )
        }
    )
    models = tuple(updated if m.name == model else m for m in spec.models if m.name not in gone)
    constraints = tuple(c for c in spec.constraints if c.target not in gone)
    return spec.model_copy(update={"models": models, "constraints": constraints})


def base_params(spec: Spec, model: Model, key: str) -> int | None:
    """The parameter count of candidate `key`'s base."""
    option = model.selection.option(key) if model.selection else None
    found = spec.base_model(option.base) if option else None
    return found.params if found else None


def described(model: Model, key: str) -> dict[str, Any]:
    """`candidate` (its key), `base` and `adapter` (its kind, or the model's own)."""
    option = model.selection.option(key) if model.selection else None
    adapter = (option.adapter if option else None) or model.adapter
    return {"candidate": key, "base": option.base if option else key,
            "adapter": adapter.kind if adapter else None}  # fmt: skip
