"""Suggest labeling functions for one labels block from its data's gold-labelled rows.

Reads the data stage's output for the block's split (`run/data/<dataset>/<split>.parquet`),
draws the sample from the rows with a gold label, builds the candidates from the fit half's
texts only, computes every candidate's firing rows with the lowered label-matrix SQL in
DuckDB (the same code path `fmc run` takes), then scores, prunes and chooses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlang.backends.data.engine import connect
from fmlang.backends.data.labeling import gold_labels, label_matrix
from fmlang.backends.data.stages import RunContext
from fmlang.backends.labelsuggest.candidates import Candidate, candidates
from fmlang.backends.labelsuggest.select import Scored, choose, sample_halves, score
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import LabelingFunction, Labels
from fmlang.lower.labels import ABSTAIN, lower_labels, split_path

MIN_SAMPLE = 4


@dataclass(frozen=True)
class Settings:
    sample: int = 50
    seed: int = 0
    per_class: int = 10
    min_support: int = 3


@dataclass(frozen=True)
class Suggestion:
    labels: Labels
    column: str
    chosen: tuple[Scored, ...]
    fit_rows: int
    held_rows: int
    rows: int  # rows of the labelled data (coverage is measured on them)
    candidates: int
    settings: Settings


def suggest(ctx: RunContext, labels: Labels, column: str, settings: Settings) -> Suggestion:
    path = split_path(labels.dataset, labels.split)
    dataset = ctx.spec.dataset(labels.dataset)
    assert dataset is not None, "the checker resolved the dataset"
    if not (ctx.build_dir / path).exists():
        hint = "run the data stage first: `fmc run FILE --until data`"
        raise StageError(_problem(labels, "FM0710", f"the data stage wrote no `{path}`", hint))
    ctx.access.require(f"labels:{labels.name}", [path])
    table = _read(ctx, path)
    gold = gold_labels(table, dataset, labels.classes)
    if gold is None:
        message = f"dataset `{dataset.name}` has no @gold label column to learn from"
        hint = "tag a `label[…]` column `@gold` and label a few rows"
        raise StageError(_problem(labels, "FM0770", message, hint))
    gold_rows = np.flatnonzero(gold != ABSTAIN)
    if len(gold_rows) < MIN_SAMPLE or settings.sample < MIN_SAMPLE:
        message = (f"{len(gold_rows)} gold-labelled rows and a sample of {settings.sample}: "
                   "too few to learn from")  # fmt: skip
        hint = f"label at least {MIN_SAMPLE} rows, and pass --sample {MIN_SAMPLE} or more"
        raise StageError(_problem(labels, "FM0771", message, hint))
    fit, held = sample_halves(gold_rows, settings.sample, settings.seed)
    texts = [str(v or "") for v in table.column(column).to_pylist()]
    pool = candidates([texts[i] for i in (*fit, *held)], column, min_rows=settings.min_support)
    fires = _fires(ctx, labels, pool)
    k = len(labels.classes)
    scored = score(pool, fires, gold, fit, held, k, settings.min_support)
    chosen = choose(scored, fires, k, settings.per_class)
    return Suggestion(labels, column, tuple(chosen), len(fit), len(held), len(texts), len(pool),
                      settings)  # fmt: skip


def _read(ctx: RunContext, path: str) -> Any:
    con = connect(ctx.build_dir)
    try:
        return con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()
    finally:
        con.close()


def _fires(ctx: RunContext, labels: Labels, pool: list[Candidate]) -> np.ndarray:
    """(rows, candidates): where each candidate's condition holds, by the lowered SQL."""
    probe = labels.model_copy(update={"functions": tuple(
        LabelingFunction(name=c.name, expr=c.expr, target=labels.classes[0]) for c in pool
    )})  # fmt: skip
    con = connect(ctx.build_dir)
    try:
        table = con.sql(lower_labels(probe).sql).to_arrow_table()
    finally:
        con.close()
    return np.asarray(label_matrix(table, probe) != ABSTAIN)


def _problem(labels: Labels, code: str, message: str, help: str) -> Any:
    span = labels.span.to_span() if labels.span else None
    return error(code, message, span, f"suggesting functions for `{labels.name}`", help=help)
