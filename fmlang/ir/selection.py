"""Model selection in the IR: `base auto in [a, b]` with `select by METRIC on SPLIT`.

A selection model `m` has no base of its own. `expand` gives every candidate base `c` a model
of its own, `m+c` (`candidate_name`): a copy of `m` with `base = c` and `candidate_of = m`,
placed right before `m`. The candidates are then ordinary models for everything downstream:
the verifier chooses their knobs under `m`'s static constraints (memory, latency, throughput,
cost, GPU hours and license, copied to each candidate by `expand`), the build lowers one
training job per candidate, and `fmc run` trains each one as its own cached stage. `m` keeps
its training settings (access, privacy and data lineage read them) but is never lowered to a
job: its stage picks the winner (`fmlang.backends.select_stage`), and its runtime gates see
the winner under `m`'s name. Merging or deploying `m` is refused (`check/selection.py`).

The verifier drops the candidates that cannot meet the static constraints (`keep`, called by
`fmlang.verify.selection`); the dropped stay listed in `Selection.dropped`.
"""

from __future__ import annotations

from fmlang.ir.nodes import Constraint, Model, Spec

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
            for base in model.selection.candidates:
                models.append(_candidate(model, base))
                constraints += [
                    c.model_copy(update={"target": candidate_name(model.name, base)})
                    for c in spec.constraints_on(model.name)
                    if c.kind in STATIC_KINDS
                ]
        models.append(model)
    return spec.model_copy(update={"models": tuple(models), "constraints": tuple(constraints)})


def _candidate(model: Model, base: str) -> Model:
    return model.model_copy(
        update={
            "name": candidate_name(model.name, base),
            "base": base,
            "selection": None,
            "candidate_of": model.name,
        }
    )


def keep(spec: Spec, model: str, survivors: tuple[str, ...]) -> Spec:
    """`spec` with only the `survivors` among `model`'s candidate bases (and their copied
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
