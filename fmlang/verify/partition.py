"""Split a spec into independent parts so each is solved alone (a 100-model spec is 100
small problems, not one large one). Models join one part when a merge combines them or
when they spend the same dataset's DP budget, and a selection model's candidates join it."""

from __future__ import annotations

from fmlang.ir.nodes import Spec


def _find(parent: dict[str, str], name: str) -> str:
    while parent.setdefault(name, name) != name:
        parent[name] = parent[parent[name]]
        name = parent[name]
    return name


def _union(parent: dict[str, str], a: str, b: str) -> None:
    parent[_find(parent, a)] = _find(parent, b)


def _groups(spec: Spec) -> dict[str, list[str]]:
    parent: dict[str, str] = {}
    for model in spec.models:
        _find(parent, model.name)
        if model.candidate_of:  # a deployment's knobs are shared by the candidates it may serve
            _union(parent, model.name, model.candidate_of)
        data = model.training.data if model.training else None
        private = model.training is not None and model.training.dp is not None
        if data is not None and private:
            labels = spec.labels_block(data.labels) if data.labels else None
            _union(parent, model.name, f"dataset:{labels.dataset if labels else data.dataset}")
    for merge in spec.merges:
        for name in merge.models:
            _union(parent, merge.name, name)
    groups: dict[str, list[str]] = {}
    for name in list(parent):
        if not name.startswith("dataset:"):
            groups.setdefault(_find(parent, name), []).append(name)
    return groups


def partition(spec: Spec) -> list[Spec]:
    """One sub-spec per group of targets; shared facts (datasets, labels, base models,
    hardware) are kept whole in each."""
    parts = []
    for names in _groups(spec).values():
        members = set(names)
        parts.append(
            spec.model_copy(
                update={
                    "models": tuple(m for m in spec.models if m.name in members),
                    "merges": tuple(m for m in spec.merges if m.name in members),
                    "constraints": tuple(c for c in spec.constraints if c.target in members),
                    "deployments": tuple(d for d in spec.deployments if d.target in members),
                }
            )
        )
    return parts or [spec]
