"""Every lowered artifact of a spec, as relative path → text, for `fmc build`.

Each lowering is pure and deterministic; a lowering that cannot express something raises
`StageError` (`LoweringError` for SQL), which `fmc build` reports as diagnostics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fmlang.atomic import json_text
from fmlang.ir.nodes import Spec
from fmlang.lower.labels import applied_query_file, lower_labels
from fmlang.lower.pipeline import lower_dataset

DIALECT_FILES = (("duckdb", "duckdb.sql"), ("spark", "spark.sql"))


def data_artifacts(spec: Spec) -> dict[str, str]:
    files: dict[str, str] = {}
    for dataset in spec.datasets:
        if dataset.source is None:
            continue
        for dialect, suffix in DIALECT_FILES:
            files[f"data/{dataset.name}.{suffix}"] = lower_dataset(dataset, dialect).script()
    for labels in spec.labels:
        for dialect, suffix in DIALECT_FILES:
            files[f"labels/{labels.name}.{suffix}"] = lower_labels(labels, dialect).script()
            for ref in labels.apply_to:
                query = lower_labels(labels, dialect, on=ref)
                files[applied_query_file(labels.name, ref, suffix)] = query.script()
    return files


def lower_artifacts(
    spec: Spec, knobs: dict[str, int | str], constraints: Sequence[dict[str, Any]] = ()
) -> dict[str, str]:
    """All artifacts: data pipelines, label queries, adapter configs, training plans and
    launcher configs, merge recipes, deployment manifests."""
    from fmlang.lower.launch import model_files
    from fmlang.lower.manifests import lower_deployments
    from fmlang.lower.selection import lower_selection, selection_path

    files = data_artifacts(spec)
    for model in spec.models:
        if model.selection is not None:  # no job of its own: its candidates train
            files[selection_path(model.name)] = json_text(lower_selection(spec, model))
            continue
        files.update(model_files(spec, model, knobs))
    files.update(merge_artifacts(spec, knobs))
    files.update(lower_deployments(spec, knobs, constraints))
    return files


def merge_artifacts(spec: Spec, knobs: dict[str, int | str]) -> dict[str, str]:
    from fmlang.lower.merges import lower_merge

    return {
        f"merges/{merge.name}.json": json_text(lower_merge(spec, merge, knobs))
        for merge in spec.merges
    }
