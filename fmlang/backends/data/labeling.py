"""The labels stage: the label matrix in one SQL pass, Python LFs, the label model, analysis.

Output `run/labels/<labels>.parquet`: the labelled split's columns, one `lf_<name>` column
per labeling function (class index, -1 = abstain), `fm_probs` (the label model's class
probabilities, in the block's class order) and `fm_label` (the most probable class; null
where every function abstained, so training can leave those rows out). Beside it:
`<labels>.analysis.json` (coverage, overlaps, conflicts, empirical accuracy against the
dataset's @gold column where there is one; `versus_majority`: the label model's coverage,
convergence and accuracy next to majority vote's, see `labelmodel/review.py`, which fails the
stage with FM0760 when it is worse beyond noise), `<labels>.model.json` (fitted
parameters and how the fit ended) and `<labels>.report.png` / `.report.html` (the analysis
as pictures, `label_report.py`). `apply_to` targets are stages of their own
(`label_apply.py`), labelled by the model fitted here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fmlang.atomic import replacing, write_json_atomic
from fmlang.backends.artifacts import read_text
from fmlang.backends.cache import stage_key
from fmlang.backends.data.engine import connect
from fmlang.backends.data.label_report import report_paths, write_report
from fmlang.backends.data.stages import Outcome, RunContext
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.files import file_sha256
from fmlang.ir.expr_text import expr_text
from fmlang.ir.nodes import DataRef, Dataset, LabelingFunction, Labels
from fmlang.lower.labels import ABSTAIN, LabelQuery, lf_column, lower_labels, split_path


def labels_paths(name: str) -> dict[str, str]:
    base = f"run/labels/{name}"
    return {
        "rows": f"{base}.parquet",
        "analysis": f"{base}.analysis.json",
        "model": f"{base}.model.json",
        **report_paths(f"{base}.analysis.json"),  # the PNG and HTML report (label_report.py)
    }


def labels_stage(ctx: RunContext, labels: Labels) -> Outcome:
    stage = f"labels:{labels.name}"
    dataset = ctx.spec.dataset(labels.dataset)
    assert dataset is not None, "the checker resolved the dataset"
    query = built_query(ctx, labels)
    source = ctx.build_dir / split_path(labels.dataset, labels.split)
    upstream = ctx.cache.key_of(f"data:{labels.dataset}")
    if upstream is None or not source.exists():
        raise StageError(_missing_input(labels, source))
    model = labels.model.model_dump(mode="json", exclude={"span"})
    key = stage_key("labels", query.sql, upstream, model, python_digests(ctx, labels))
    paths = labels_paths(labels.name)
    ctx.access.require(stage, [split_path(labels.dataset, labels.split)])
    explain = {
        f"stage `data:{labels.dataset}`": upstream[:12],
        "the labeling functions": "\n".join(lf_text(lf) for lf in labels.functions),
        "the label model": stage_key(model)[:12],
    }
    if not ctx.force and ctx.cache.fresh(stage, key, explain):
        return Outcome(stage, True, tuple(paths.values()), {})
    table = apply_labels(ctx, labels, query)
    summary = _fit_and_write(ctx, labels, dataset, table, paths)
    title = f"labels `{labels.name}`"
    report = write_report(ctx.build_dir, paths["analysis"], paths["rows"], title)
    ctx.log(f"  report: {ctx.build_dir / report['report']}")
    ctx.cache.record(stage, key, list(paths.values()), explain)
    return Outcome(stage, False, tuple(paths.values()), summary)


def lf_text(lf: LabelingFunction) -> str:
    """`lf name: condition -> class` as the spec writes it (one line)."""
    body = expr_text(lf.expr) if lf.expr is not None else f'python("{lf.python}")'
    return f"lf {lf.name}: {body}" + (f" -> {lf.target}" if lf.target else "")


def built_query(ctx: RunContext, labels: Labels) -> LabelQuery:
    """The label-matrix query the build folder holds (`labels/<labels>.duckdb.sql`, or
    `.spark.sql` for `--engine spark`), with the spec's labeling functions (their order is
    the matrix's columns)."""
    if ctx.engine == "spark":
        from fmlang.backends.data.spark import built_label_sql

        sql = built_label_sql(ctx.build_dir, labels.name, labels.span)
        return replace(lower_labels(labels, "spark"), sql=sql)
    text = read_text(ctx.build_dir, f"labels/{labels.name}.duckdb.sql", labels.name, labels.span)
    return replace(lower_labels(labels), sql=text.strip().rstrip(";"))


def _missing_input(labels: Labels, source: Path) -> Any:
    span = labels.span.to_span() if labels.span else None
    return error(
        "FM0710",
        f"labels `{labels.name}` need dataset `{labels.dataset}`'s data stage output",
        span,
        f"reads {source.name}",
        help=f"run the data stage first: `fmc run FILE --until data` (missing: {source})",
    )


def apply_labels(
    ctx: RunContext, labels: Labels, query: LabelQuery, on: DataRef | None = None
) -> Any:
    """The label-matrix pass over the block's split (or `on`, an `apply_to` target), then
    the Python functions, as an Arrow table. Under DuckDB the pass is polars' when every
    function has an exact polars form (`label_polars`: the same table, about 1.6x as fast),
    else the built SQL's."""
    if query.dialect == "spark":
        from fmlang.backends.data.spark import label_table, spark_log, spark_session

        spark = spark_session(spark_log(ctx.build_dir))
        table = label_table(spark, ctx.build_dir, query.sql, labels.name, labels.span)
    else:
        table = sql_or_polars_table(ctx, labels, query, on)
    for lf in labels.functions:
        if lf.python:
            votes = _python_votes(ctx, labels, lf, table.to_pylist())
            column = table.schema.get_field_index(lf_column(lf.name))
            table = table.set_column(column, lf_column(lf.name), _int_array(votes))
    return table


def sql_or_polars_table(
    ctx: RunContext, labels: Labels, query: LabelQuery, on: DataRef | None = None
) -> Any:
    """The label matrix (and the split's columns) from polars where it applies, else from
    the built SQL in DuckDB; the log says which ran."""
    from fmlang.backends.data.label_polars import polars_label_table

    source = split_path(on.dataset, on.split) if on else split_path(labels.dataset, labels.split)
    table, why_not = polars_label_table(ctx.build_dir, labels, source)
    if table is not None:
        ctx.log(f"  label matrix: polars ({len(labels.functions)} functions)")
        return table
    ctx.log(f"  label matrix: SQL in DuckDB ({why_not})")
    con = connect(ctx.build_dir)
    try:
        return con.sql(query.sql).to_arrow_table()
    finally:
        con.close()


def _int_array(values: list[int]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.int32())


def _python_votes(ctx: RunContext, labels: Labels, lf: LabelingFunction,
                  rows: list[dict[str, Any]]) -> list[int]:  # fmt: skip
    with spec_folder_on_path(str(ctx.spec_dir(labels.file))):
        fn = _import(lf)
        return [_vote(labels, lf, _call(lf, fn, row)) for row in rows]


def _vote(labels: Labels, lf: LabelingFunction, value: Any) -> int:
    if value is None:
        return ABSTAIN
    if value in labels.classes:
        return labels.classes.index(value)
    raise StageError(_lf_error(lf, f"returned {value!r}, not a class or None"))


def _call(lf: LabelingFunction, fn: Callable[[Any], Any], row: dict[str, Any]) -> Any:
    """The user's function on one row. Whatever it raises, `SystemExit` included, becomes
    FM0706 (never a crash, never a silent exit); only Ctrl-C goes through."""
    try:
        return fn(row)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a user's function: report, never crash
        raise StageError(_lf_error(lf, _failure(exc))) from exc


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):  # its code may be the row itself: never shown
        status = f" with status {exc.code}" if isinstance(exc.code, int) else ""
        return f"called `sys.exit`{status} instead of returning a class or None"
    return f"raised {type(exc).__name__}: {exc}"


@contextmanager
def spec_folder_on_path(folder: str) -> Iterator[None]:
    """The spec's folder first on `sys.path` while its functions are imported and called;
    afterwards `sys.path` is as it was (whatever the functions did to it)."""
    saved = list(sys.path)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path[:] = saved


def _import(lf: LabelingFunction) -> Callable[[Any], Any]:
    module_name, _, attr = (lf.python or "").partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr or "label")
    except (ImportError, AttributeError) as exc:
        raise StageError(_lf_error(lf, f"cannot be imported: {exc}")) from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the module's own code ran and failed
        raise StageError(
            _lf_error(lf, f"failed while its module was imported: {_failure(exc)}")
        ) from exc
    if not callable(fn):
        raise StageError(_lf_error(lf, f"`{lf.python}` is not a function"))
    return fn  # type: ignore[no-any-return]


def _lf_error(lf: LabelingFunction, what: str) -> Any:
    return error(
        "FM0706",
        f"labeling function `{lf.name}` ({lf.python}) {what}",
        lf.span.to_span() if lf.span else None,
        "this function",
        help="the function takes one row (a dict of column → value) and returns a class "
        "name or None; its module is found relative to the spec's folder",
    )


def python_digests(ctx: RunContext, labels: Labels) -> list[tuple[str, str]]:
    out = []
    for lf in labels.functions:
        if lf.python:
            module = lf.python.partition(":")[0].replace(".", "/")
            for candidate in (f"{module}.py", f"{module}/__init__.py"):
                path = ctx.spec_dir(labels.file) / candidate
                if path.exists():
                    out.append((lf.python, file_sha256(path)))
    return out


def label_matrix(table: Any, labels: Labels) -> np.ndarray:
    """The block's votes as a rows x functions matrix in the narrowest signed integer that
    holds -1 and every class index (int8 below 128 classes): a million rows of 20 functions
    take 20 MB, not int64's 160 MB, and the label model reads it in place."""
    dtype = np.int8 if len(labels.classes) <= 127 else np.int32
    columns = [table.column(lf_column(lf.name)).to_numpy() for lf in labels.functions]
    if not columns:
        return np.full((table.num_rows, 0), ABSTAIN, dtype=dtype)
    return np.stack(columns, axis=1, dtype=dtype)


def gold_labels(table: Any, dataset: Dataset, classes: tuple[str, ...]) -> np.ndarray | None:
    """Class indices from the dataset's @gold label column (-1 where missing), if any."""
    gold = next((c for c in dataset.columns if "gold" in c.tags and c.type == "label"), None)
    if gold is None or gold.name not in table.column_names:
        return None
    values = table.column(gold.name).to_pylist()
    return np.array([classes.index(v) if v in classes else ABSTAIN for v in values])


def fit(labels: Labels, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """Class probabilities and predicted classes (-1: no label) per row, from the block's
    label model or majority vote (with its tie policy)."""
    from fmlang.backends.labelmodel.majority import majority_proba, majority_vote
    from fmlang.backends.labelmodel.model import fit_label_model

    k = len(labels.classes)
    options = {o.name: o.value for o in labels.model.options}
    if labels.model.kind == "majority":
        tie = str(options.get("tie", "abstain"))
        return majority_proba(matrix, k), majority_vote(matrix, k, tie=tie), None  # type: ignore[arg-type]
    model = fit_label_model(matrix, k, **options)  # type: ignore[arg-type]
    return model.predict_proba(matrix), model.label(matrix), model


def _fit_and_write(ctx: RunContext, labels: Labels, dataset: Dataset, table: Any,
                   paths: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    import pyarrow as pa

    from fmlang.backends.labelmodel.analysis import lf_summary

    matrix = label_matrix(table, labels)
    probs, best, model = fit(labels, matrix)
    covered = best != ABSTAIN
    names = [labels.classes[i] if i != ABSTAIN else None for i in best]
    table = table.append_column("fm_probs", pa.array(probs.tolist(), pa.list_(pa.float64())))
    table = table.append_column("fm_label", pa.array(names, pa.string()))
    gold = gold_labels(table, dataset, labels.classes)
    versus = _versus_majority(ctx, labels, matrix, best, gold, model)
    write_table(table, ctx.build_dir / paths["rows"])
    spans = {lf.name: lf.span.to_span() if lf.span else None for lf in labels.functions}
    weights = model.weights() if model is not None else None
    summary = lf_summary(matrix, [lf.name for lf in labels.functions], len(labels.classes),
                         gold, spans, classes=labels.classes, learned_accuracy=weights)  # fmt: skip
    ctx.diagnostics.extend(summary.warnings)
    ctx.log(summary.table())  # a rich Table: coverage, overlaps, conflicts, accuracy
    document: dict[str, Any] = {"labels": labels.name, "analysis": summary.to_json()}
    document["label_model"] = label_accuracy(best, covered, gold)
    if versus is not None:
        document["versus_majority"] = versus
    write_json_atomic(ctx.build_dir / paths["analysis"], document)
    write_json_atomic(
        ctx.build_dir / paths["model"], model.to_json() if model else {"kind": "majority"}
    )
    return {"summary": summary, **document["label_model"]}


def _versus_majority(ctx: RunContext, labels: Labels, matrix: np.ndarray, best: np.ndarray,
                     gold: np.ndarray | None, model: Any) -> dict[str, Any] | None:  # fmt: skip
    """The label model's coverage, convergence and accuracy next to majority vote's, logged
    and returned for the analysis file; FM0760 (the stage fails) when it is worse beyond
    noise. None for `model majority`."""
    from fmlang.backends.labelmodel import review

    if model is None:
        return None
    found = review.review(matrix, len(labels.classes), best, gold)
    span = labels.model.span.to_span() if labels.model.span else None
    span = span or (labels.span.to_span() if labels.span else None)
    for line in review.fit_lines(model, found):
        ctx.log(line)
    ctx.diagnostics.extend(review.fit_warnings(model, span))
    if found.worse_on_gold or found.contradicts_majority:
        options = {o.name: o.value for o in labels.model.options}
        passing = review.alternative(matrix, len(labels.classes), gold, options)
        worse = review.worse_error(found, labels.name, span, passing)
        assert worse is not None, "the review found it worse"
        raise StageError(worse)
    fit = model.to_json()["fit"]
    return {**found.to_json(), "fit": fit}


def label_accuracy(
    best: np.ndarray, covered: np.ndarray, gold: np.ndarray | None
) -> dict[str, Any]:
    """The label model's accuracy against gold, on covered rows and with abstains as wrong."""
    out: dict[str, Any] = {"rows": len(best), "covered": int(covered.sum())}
    if gold is None:
        return out
    known = gold != ABSTAIN
    hits = (best == gold) & covered & known
    out["accuracy_covered"] = float(hits.sum() / max(1, (covered & known).sum()))
    out["accuracy_all"] = float(hits.sum() / max(1, known.sum()))
    out["policy"] = "the most probable class; ties and all-abstain rows count as wrong"
    return out


def write_table(table: Any, target: Path) -> None:
    import pyarrow.parquet as pq

    with replacing(target) as tmp:
        pq.write_table(table, tmp)
