"""Labels applied beyond their own split: one stage per `apply_to` target of a labels block.

Stage `labels:<labels>@<dataset>.<split>` runs the target's label-matrix query from the build
folder (`labels/<labels>/<dataset>/<split>.duckdb.sql`: the same functions, reading the
target's data-stage output), fills in Python functions, and labels the rows with the model
the labels stage fitted (`run/labels/<labels>.model.json`), never refitting it on the
target. Outputs, as for the labels stage: `run/labels/<labels>/<dataset>/<split>.parquet`
(the rows, `lf_*` votes, `fm_probs`, `fm_label`) and `<split>.analysis.json` (LF coverage,
overlaps, conflicts and accuracy on the target, and the label model's accuracy against the
target's @gold column when it has one: the held-out figure). The cache key covers the query,
the target's data and the labels stage's key, so a refit relabels every target.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fmlang.atomic import write_json_atomic
from fmlang.backends.artifacts import read_text
from fmlang.backends.cache import stage_key
from fmlang.backends.data.label_report import write_report
from fmlang.backends.data.labeling import (
    apply_labels,
    gold_labels,
    label_accuracy,
    label_matrix,
    labels_paths,
    python_digests,
    write_table,
)
from fmlang.backends.data.stages import Outcome, RunContext
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import DataRef, Labels
from fmlang.lower.labels import (
    ABSTAIN,
    LabelQuery,
    applied_paths,
    applied_query_file,
    lower_labels,
    split_path,
)


def applied_stage_name(labels: Labels, ref: DataRef) -> str:
    return f"labels:{labels.name}@{ref.dataset}.{ref.split or 'all'}"


def applied_stage(ctx: RunContext, labels: Labels, ref: DataRef) -> Outcome:
    stage = applied_stage_name(labels, ref)
    dataset = ctx.spec.dataset(ref.dataset)
    assert dataset is not None, "the checker resolved the dataset"
    query = _built_query(ctx, labels, ref)
    source = split_path(ref.dataset, ref.split)
    upstream = ctx.cache.key_of(f"data:{ref.dataset}")
    if upstream is None or not (ctx.build_dir / source).exists():
        raise StageError(_missing(labels, ref, source, f"dataset `{ref.dataset}`'s data stage"))
    fitted = ctx.cache.key_of(f"labels:{labels.name}")
    model_file = labels_paths(labels.name)["model"]
    if fitted is None or not (ctx.build_dir / model_file).exists():
        raise StageError(_missing(labels, ref, model_file, f"labels `{labels.name}`' stage"))
    key = stage_key("labels-apply", query.sql, upstream, fitted, python_digests(ctx, labels))
    paths = applied_paths(labels.name, ref)
    ctx.access.require(stage, [source, model_file])
    if not ctx.force and ctx.cache.fresh(stage, key):
        return Outcome(stage, True, tuple(paths.values()), {})
    table = apply_labels(ctx, labels, query, on=ref)
    summary = _label_and_write(ctx, labels, ref, table, ctx.build_dir / model_file, paths)
    title = f"labels `{labels.name}` applied to `{ref.dataset}.{ref.split or 'all'}`"
    report = write_report(ctx.build_dir, paths["analysis"], paths["rows"], title)
    ctx.log(f"  report: {ctx.build_dir / report['report']}")
    ctx.cache.record(stage, key, list(paths.values()))
    return Outcome(stage, False, tuple(paths.values()), summary)


def _built_query(ctx: RunContext, labels: Labels, ref: DataRef) -> LabelQuery:
    """The target's label-matrix query as the build folder holds it, for the run's engine."""
    if ctx.engine == "spark":
        from fmlang.backends.data.spark import built_label_sql

        relative = applied_query_file(labels.name, ref, "spark.sql")
        sql = built_label_sql(ctx.build_dir, labels.name, labels.span, relative)
        return replace(lower_labels(labels, "spark", on=ref), sql=sql)
    relative = applied_query_file(labels.name, ref, "duckdb.sql")
    text = read_text(ctx.build_dir, relative, labels.name, labels.span)
    return replace(lower_labels(labels, on=ref), sql=text.strip().rstrip(";"))


def predict(labels: Labels, matrix: np.ndarray, model_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and classes (-1: no label) from the fitted model, as the labels
    stage predicts its own rows: majority vote with the block's tie policy, or the label
    model's most probable class under its `tie` (rows with no vote unlabelled)."""
    from fmlang.backends.labelmodel.majority import majority_proba, majority_vote
    from fmlang.backends.labelmodel.model import LabelModel

    k = len(labels.classes)
    if labels.model.kind == "majority":
        options = {o.name: o.value for o in labels.model.options}
        tie = str(options.get("tie", "abstain"))
        return majority_proba(matrix, k), majority_vote(matrix, k, tie=tie)  # type: ignore[arg-type]
    model = LabelModel.load(model_file)
    return model.predict_proba(matrix), model.label(matrix)


def _label_and_write(ctx: RunContext, labels: Labels, ref: DataRef, table: Any,
                     model_file: Path, paths: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    import pyarrow as pa

    from fmlang.backends.labelmodel.analysis import lf_summary

    dataset = ctx.spec.dataset(ref.dataset)
    assert dataset is not None
    matrix = label_matrix(table, labels)
    probs, best = predict(labels, matrix, model_file)
    names = [labels.classes[i] if i != ABSTAIN else None for i in best]
    table = table.append_column("fm_probs", pa.array(probs.tolist(), pa.list_(pa.float64())))
    table = table.append_column("fm_label", pa.array(names, pa.string()))
    write_table(table, ctx.build_dir / paths["rows"])
    gold = gold_labels(table, dataset, labels.classes)
    spans = {lf.name: lf.span.to_span() if lf.span else None for lf in labels.functions}
    summary = lf_summary(matrix, [lf.name for lf in labels.functions], len(labels.classes),
                         gold, spans, classes=labels.classes)  # fmt: skip
    ctx.diagnostics.extend(summary.warnings)
    ctx.log(summary.table())
    accuracy = label_accuracy(best, best != ABSTAIN, gold)
    ctx.log(_line(ref, accuracy))
    document: dict[str, Any] = {
        "labels": labels.name,
        "applied_to": {"dataset": ref.dataset, "split": ref.split},
        "analysis": summary.to_json(),
        "label_model": accuracy,
    }
    write_json_atomic(ctx.build_dir / paths["analysis"], document)
    return {"summary": summary, **accuracy}


def _line(ref: DataRef, accuracy: dict[str, Any]) -> str:
    where = f"{ref.dataset}.{ref.split}" if ref.split else ref.dataset
    text = f"  {where}: {accuracy['rows']:,} rows, {accuracy['covered']:,} labelled"
    if "accuracy_all" in accuracy:
        text += (
            f"; label model vs @gold: {accuracy['accuracy_covered']:.3f} on labelled rows, "
            f"{accuracy['accuracy_all']:.3f} on all (abstains wrong)"
        )
    return text


def _missing(labels: Labels, ref: DataRef, path: str, what: str) -> Any:
    span = ref.span.to_span() if ref.span else (labels.span.to_span() if labels.span else None)
    return error(
        "FM0710",
        f"labels `{labels.name}` applied to `{ref.dataset}.{ref.split or 'all'}` need "
        f"{what} output",
        span,
        "applied here",
        help=f"run the earlier stages first: `fmc run FILE --until labels` (missing: {path})",
    )
