"""Suggest labeling functions for one labels block from its data's gold-labelled rows.

Reads the data stage's output for the block's split (`run/data/<dataset>/<split>.parquet`),
draws the sample from the rows with a gold label, and computes every candidate's firing rows
with the lowered label-matrix SQL in DuckDB (the same code path `fmc run` takes). Two rounds:

1. candidates from the sample's texts, scored on the sample alone, chosen greedily;
2. the first round's precise functions become detectors (`estimate.py`) that measure a
   candidate's precision on every row; the candidates grow by the words and pairs common
   in all the rows (WIDER_SHARE of them; those need an estimate, as the sample has too few
   rows to judge them) and by every candidate restricted to the rows where no first-round
   function of another class matches (`candidates.restrict`), and, with `--propose-with`, by
   the keywords a local generative model proposes (`propose.py`; those need an estimate
   too). All are scored again (the estimate replaces the sample's lower bound where there
   is one) and chosen afresh.

`benchmarks/label_suggest.py` measures the result on YouTube's test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlang.backends.data.engine import connect
from fmlang.backends.data.labeling import gold_labels, label_matrix
from fmlang.backends.data.stages import RunContext
from fmlang.backends.labelsuggest.candidates import Candidate, candidates, keyword, restrict
from fmlang.backends.labelsuggest.estimate import Detector, detector, precision
from fmlang.backends.labelsuggest.propose import generate, parse, prompt
from fmlang.backends.labelsuggest.select import Scored, choose, sample_halves, score
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import LabelingFunction, Labels
from fmlang.lower.labels import ABSTAIN, lower_labels, split_path

MIN_SAMPLE = 4
WIDER_SHARE = 0.005
"""Second-round words and pairs must occur in this share of all rows (and in `min_support`)."""
WIDER_ROWS = 20_000
"""The second round's words come from at most this many rows (drawn with the seed)."""


@dataclass(frozen=True)
class Settings:
    sample: int = 50
    seed: int = 0
    per_class: int = 10
    min_support: int = 3
    propose_with: str | None = None  # a local generative model's folder or hub id


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
    k = len(labels.classes)
    pool = candidates([texts[i] for i in (*fit, *held)], column, min_rows=settings.min_support)
    fires = _fires(ctx, labels, pool)
    first = choose(score(pool, fires, gold, fit, held, k, settings.min_support), fires, k,
                   settings.per_class)  # fmt: skip
    sample = np.concatenate([fit, held])
    proposed = _proposed(labels, settings, texts, gold, sample)
    every, fires = _grown(ctx, labels, column, settings, texts, pool, fires, first, gold, sample,
                          proposed)  # fmt: skip
    detectors = _detectors(first, fires, gold, sample, k)
    wider = frozenset(j for j, c in enumerate(every) if j >= len(pool) and not c.base)

    def estimate(j: int, target: int) -> float | None:
        return precision(every[j], fires[:, j], target, detectors, fires, labels.classes)

    def direct(j: int, target: int) -> float | None:
        return precision(every[j], fires[:, j], target, detectors, fires, labels.classes,
                         own_only=True)  # fmt: skip

    scored = score(every, fires, gold, fit, held, k, settings.min_support, estimate=estimate,
                   needs_estimate=wider, unseen=direct)  # fmt: skip
    chosen = choose(scored, fires, k, settings.per_class)
    return Suggestion(labels, column, tuple(chosen), len(fit), len(held), len(texts),
                      len(every), settings)  # fmt: skip


def _grown(ctx: RunContext, labels: Labels, column: str, settings: Settings, texts: list[str],
           pool: list[Candidate], fires: np.ndarray, first: list[Scored], gold: np.ndarray,
           sample: np.ndarray,
           proposed: list[str]) -> tuple[list[Candidate], np.ndarray]:  # fmt: skip
    """The second round's candidates (`pool`, then the wider words and the `proposed`
    phrases, then the restricted candidates) and their firing rows (`fires` extended)."""
    leaning = _leaning(fires, gold, sample, len(labels.classes))
    wider = _wider(texts, pool, column, settings)
    taken = {c.name for c in pool + wider}
    phrases = [keyword(column, p) for p in proposed]
    wider += [c for c in phrases if c.name not in taken]
    more = wider + _restricted(pool, leaning, first, column, labels)
    return pool + more, np.concatenate([fires, _fires(ctx, labels, more)], axis=1)


def _proposed(labels: Labels, settings: Settings, texts: list[str], gold: np.ndarray,
              sample: np.ndarray) -> list[str]:  # fmt: skip
    """The phrases the `--propose-with` model proposes from the sample's texts (none
    without one); FM0776 when it cannot be loaded."""
    if settings.propose_with is None:
        return []
    examples: dict[str, list[str]] = {}
    for i in sample:
        examples.setdefault(labels.classes[gold[i]], []).append(texts[i])
    try:
        answer = generate(settings.propose_with, prompt(labels.classes, examples))
    except (OSError, ValueError) as exc:
        message = f"cannot load the generative model `{settings.propose_with}`: {exc}"
        hint = ("pass a folder holding a causal language model and its tokenizer, or a hub "
                "id already downloaded")  # fmt: skip
        raise StageError(_problem(labels, "FM0776", message.splitlines()[0], hint)) from exc
    return parse(answer, labels.classes)


def _wider(texts: list[str], pool: list[Candidate], column: str,
           settings: Settings) -> list[Candidate]:  # fmt: skip
    """Keyword, pair and prefix candidates common in all the rows and not already in
    `pool` (the shapes and lengths are there already)."""
    rows = np.random.default_rng(settings.seed).permutation(len(texts))[:WIDER_ROWS]
    least = max(settings.min_support, math.ceil(WIDER_SHARE * len(rows)))
    taken = {c.name for c in pool}
    found = candidates([texts[i] for i in sorted(rows)], column, min_rows=least)
    return [c for c in found if c.name not in taken and c.kind in ("keyword", "prefix")]


def _leaning(fires: np.ndarray, gold: np.ndarray, sample: np.ndarray, k: int) -> np.ndarray:
    """Per candidate, the gold class most common on the sample rows where it fires (ties:
    the lower index); -1 where it fires on none."""
    counts = np.stack([fires[sample][gold[sample] == c].sum(axis=0) for c in range(k)])
    return np.where(counts.sum(axis=0) > 0, counts.argmax(axis=0), -1)


def _restricted(pool: list[Candidate], leaning: np.ndarray, first: list[Scored], column: str,
                labels: Labels) -> list[Candidate]:  # fmt: skip
    """Each candidate of `pool` that leans to a class on the sample, restricted once per
    other class whose first-round functions include a pattern: to the rows none of those
    matches. (Restricting a candidate that leans to the class it excludes would turn "not
    ham-like" into a function for spam: a closed-world guess, not evidence.)"""
    out = []
    for u, label in enumerate(labels.classes):
        others = [s.candidate for s in first if s.target == u and s.candidate.regex is not None]
        if others:
            pairs = zip(pool, leaning, strict=True)
            out += [restrict(c, column, others, label) for c, lean in pairs if lean not in (-1, u)]
    return out


def _detectors(first: list[Scored], fires: np.ndarray, gold: np.ndarray, sample: np.ndarray,
               k: int) -> dict[int, Detector]:  # fmt: skip
    """Per class, the detector made of its first-round functions that were right on every
    sample row where they fired, where it is strong enough."""
    out = {}
    for target in range(k):
        members = [(s.candidate, s.column) for s in first
                   if s.target == target and s.correct == s.fires]  # fmt: skip
        found = detector(target, members, fires, gold, sample)
        if found is not None:
            out[target] = found
    return out


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
