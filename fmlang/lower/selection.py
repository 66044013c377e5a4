"""`train/<model>/selection.json`: how `fmc run` picks a selection model's base.

A model with `base auto in [...]` (or `adapter auto in [...]`) has no training job of its
own; each candidate the verifier kept is an ordinary model `m+c` with its own job
(`fmlang.ir.selection`). This file lists them (`candidate`: the key `c`, its `base` and
`adapter` kind) in the order `fmc run` trains them (smallest base first, then by key),
with the objective (`select by METRIC on SPLIT`, the lowest or the highest wins) and the
candidates the verifier dropped. The select stage (`fmlang.backends.select_stage`) reads it:
the build folder is what runs.
"""

from __future__ import annotations

from typing import Any

from fmlang.ir.nodes import Model, Spec
from fmlang.ir.selection import base_params, candidate_name, described

SELECTION_FILE = "train/{model}/selection.json"


def selection_path(model: str) -> str:
    return SELECTION_FILE.format(model=model)


def lower_selection(spec: Spec, model: Model) -> dict[str, Any]:
    selection = model.selection
    assert selection is not None
    on = selection.on
    params = {k: base_params(spec, model, k) or 0 for k in selection.candidates}
    ordered = sorted(selection.candidates, key=lambda k: (params[k], k))
    return {
        "schema_version": "1",
        "model": model.name,
        "metric": selection.metric,
        "on": f"{on.dataset}.{on.split}" if on is not None and on.split else None,
        "lowest_wins": selection.lower_is_better,
        "candidates": [
            {**described(model, k), "model": candidate_name(model.name, k), "params": params[k]}
            for k in ordered
        ],
        "dropped": list(selection.dropped),
    }
