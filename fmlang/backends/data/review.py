"""`fmc data review`: what each cleaning rule removed or changed, for a person to check, and
their verdicts written back into the spec as reviewable source.

The pipeline runs again in DuckDB from the build folder's SQL (`data/<dataset>.duckdb.sql`),
every step's table kept, and each rule's table is compared with the one before it by
`fm_row`:

- a rule that removes rows (`drop where`, `keep where`, `dedupe`): the rows it removed; for
  `dedupe` also the row kept in their place, with their similarity (the rule's own: Jaccard
  over character 5-grams for `near`, 1.0 for an exact duplicate);
- a rule that rewrites columns (`normalize`, `redact`): the rows it changed, before and after.

A removal marked wrong (`--keep ID`, the row's `@id` value) becomes an exception on the rule
that removed it: `drop where C` is rewritten `drop where (C) and not ID in ["…"]`, and
`keep where C` becomes `keep where (C) or ID in ["…"]`, in the spec file itself, so the next
run keeps the row and the change is reviewed like any edit. A `dedupe … near T` rule has no
per-row exceptions (the rows kept in their place would change); its threshold is raised
instead, to the smallest three-decimal value above the row's similarity to every earlier
row (`nearest`): the rule drops a row only for an earlier row at least T similar, so the
row stays, and so does every other pair that was as close. An exact `dedupe` (or a row
whose text equals an earlier one) is refused with the reason (FM0773).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fmlang.backends.data.engine import connect, run_pipeline
from fmlang.backends.data.stages import RunContext, _register_hf, built_pipeline
from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.ir.nodes import Dataset, Dedupe, FilterRows, Normalize, Redact
from fmlang.lower.near_dedupe import SHINGLE
from fmlang.syntax import ast

_Rule = TypeVar("_Rule")
PII = "<pii>"  # what a @pii column shows: a reviewer sees what the rules did, not who wrote


@dataclass(frozen=True)
class Change:
    """One row a rule removed (`after` None) or changed."""

    key: str | None  # the row's @id value
    before: dict[str, Any]
    after: dict[str, Any] | None = None
    kept: dict[str, Any] | None = None  # dedupe: the row kept in its place
    similarity: float | None = None


@dataclass(frozen=True)
class RuleReview:
    title: str
    line: int | None
    removes: bool  # removes rows (else rewrites columns)
    total: int
    samples: tuple[Change, ...]
    removed_keys: frozenset[str]  # every removed row's @id value
    rule: Any  # the IR rule
    # `dedupe … near`: for each row asked about (`review(keys=…)`) that it removed, the
    # highest similarity to any earlier row, the rule's own measure
    nearest: dict[str, float] = field(default_factory=dict)


def review(
    ctx: RunContext, dataset: Dataset, samples: int, keys: frozenset[str] = frozenset()
) -> list[RuleReview]:
    """Each cleaning rule's removals or changes (`samples` of them shown); for the rows named
    in `keys` that a near-dedupe removed, their similarity to the nearest earlier row."""
    pipeline, _ = built_pipeline(ctx, dataset)
    rules = {rule.span: rule for rule in dataset.cleaning if rule.span is not None}
    key = next((c.name for c in dataset.columns if "id" in c.tags), None)
    hidden = frozenset(c.name for c in dataset.columns if "pii" in c.tags)
    con = connect(ctx.spec_dir(dataset.file))
    try:
        if dataset.source is not None and dataset.source.kind == "hf_disk":
            _register_hf(con, ctx.spec_dir(dataset.file) / dataset.source.path, dataset)
        run_pipeline(con, pipeline, dataset)
        out = []
        for index, step in enumerate(pipeline.steps):
            rule = rules.get(step.span) if step.span is not None else None
            if rule is None or index == 0:
                continue
            before = pipeline.steps[index - 1].table
            line = step.span.line if step.span else None
            if isinstance(rule, FilterRows | Dedupe):
                out.append(_removed(con, before, step.table, step.title, line, rule, key,
                                    hidden, samples, keys))  # fmt: skip
            elif isinstance(rule, Normalize | Redact):
                out.append(_changed(con, before, step.table, step.title, line, rule, key, samples))
        return out
    finally:
        con.close()


def _rows(con: Any, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _visible(row: dict[str, Any], hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The row's columns, internal ones left out and @pii ones masked."""
    return {k: (PII if k in hidden else v) for k, v in row.items() if not k.startswith("fm_")}


def _removed(con: Any, before: str, after: str, title: str, line: int | None, rule: Any,
             key: str | None, hidden: frozenset[str], samples: int,
             asked: frozenset[str]) -> RuleReview:  # fmt: skip
    gone = _rows(con, f'SELECT * FROM "{before}" WHERE fm_row NOT IN '
                      f'(SELECT fm_row FROM "{after}") ORDER BY fm_row')  # fmt: skip
    kept = (
        _rows(con, f'SELECT * FROM "{after}" ORDER BY fm_row') if isinstance(rule, Dedupe) else []
    )
    changes = []
    for row in gone[:samples]:
        partner, similarity = _partner(row, kept, rule) if kept else (None, None)
        if partner is not None:
            partner = {k: (PII if k in hidden else v) for k, v in partner.items()}
        changes.append(Change(_key(row, key), _visible(row, hidden), None, partner, similarity))
    keys = frozenset(k for k in (_key(row, key) for row in gone) if k is not None)
    nearest = {}
    if isinstance(rule, Dedupe) and rule.near is not None and asked & keys:
        earlier = _rows(con, f'SELECT * FROM "{before}" ORDER BY fm_row')
        for row in gone:
            name = _key(row, key)
            if name in asked:
                mine = _grams(row, rule.columns)
                prior = (o for o in earlier if o["fm_row"] < row["fm_row"])
                nearest[name] = max((_jaccard(mine, _grams(o, rule.columns)) for o in prior),
                                    default=0.0)  # fmt: skip
    return RuleReview(title, line, True, len(gone), tuple(changes), keys, rule, nearest)


def _partner(row: dict[str, Any], kept: list[dict[str, Any]],
             rule: Dedupe) -> tuple[dict[str, Any] | None, float | None]:  # fmt: skip
    """The kept row the rule matched `row` with, and their similarity: for `dedupe … near`
    the rule's own measure (Jaccard over the lower-cased character 5-grams of the columns
    joined by a space), the most similar kept row; for an exact dedupe the equal one."""
    if rule.near is None:
        same = next((o for o in kept if all(o[c] == row[c] for c in rule.columns)), None)
        return (_visible(same), 1.0) if same is not None else (None, None)
    mine = _grams(row, rule.columns)
    best, score = None, -1.0
    for other in kept:
        similarity = _jaccard(mine, _grams(other, rule.columns))
        if similarity > score:
            best, score = other, similarity
    return (_visible(best), round(score, 3)) if best is not None else (None, None)


def _jaccard(one: set[str], other: set[str]) -> float:
    union = one | other
    return len(one & other) / len(union) if union else 1.0


def _grams(row: dict[str, Any], columns: tuple[str, ...]) -> set[str]:
    text = " ".join(str(row[c]) for c in columns if row.get(c) is not None).lower()
    return {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}


def _changed(con: Any, before: str, after: str, title: str, line: int | None, rule: Any,
             key: str | None, samples: int) -> RuleReview:  # fmt: skip
    differs = " OR ".join(f'b."{c}" IS DISTINCT FROM a."{c}"' for c in rule.columns)
    picked = ", ".join(f'b."{c}" AS "{c}", a."{c}" AS "fm_after_{c}"' for c in rule.columns)
    ident = f', b."{key}" AS "{key}"' if key and key not in rule.columns else ""
    rows = _rows(con, f'SELECT b.fm_row{ident}, {picked} FROM "{before}" b JOIN "{after}" a '
                      f"USING (fm_row) WHERE {differs} ORDER BY b.fm_row")  # fmt: skip
    changes = tuple(
        Change(
            _key(row, key),
            {c: row[c] for c in rule.columns},
            {c: row[f"fm_after_{c}"] for c in rule.columns},
        )
        for row in rows[:samples]
    )
    return RuleReview(title, line, False, len(rows), changes, frozenset(), rule)


def _key(row: dict[str, Any], key: str | None) -> str | None:
    return None if key is None or row.get(key) is None else str(row[key])


# ---- verdicts written back ----------------------------------------------------------------


def keep_rows(text: str, dataset: ast.Dataset, rule: FilterRows, id_column: str,
              keys: list[str]) -> str:  # fmt: skip
    """The spec's text with `keys` excepted from the filter rule (see the module docstring)."""
    node = _ast_rule(dataset, rule)
    condition = node.condition.span
    original = text[condition.start : condition.end]
    listed = ", ".join(_quoted(k) for k in keys)
    if rule.keep:
        rewritten = f"({original}) or {id_column} in [{listed}]"
    else:
        rewritten = f"({original}) and not {id_column} in [{listed}]"
    return text[: condition.start] + rewritten + text[condition.end :]


def raised_threshold(similarity: float) -> float | None:
    """The smallest three-decimal threshold above `similarity` (None above 1: the text is
    the same as an earlier row's, and no threshold keeps it)."""
    raised = (math.floor(similarity * 1000 + 1e-9) + 1) / 1000
    return raised if raised <= 1.0 else None


def raise_near(text: str, dataset: ast.Dataset, rule: Dedupe, threshold: float) -> str:
    """The spec's text with the dedupe rule's `near` value replaced by `threshold`."""
    node = _ast_node(dataset, rule, ast.Dedupe)
    assert node.near is not None
    where = node.near.span
    return text[: where.start] + f"{threshold:.3f}" + text[where.end :]


def _ast_rule(dataset: ast.Dataset, rule: FilterRows) -> ast.FilterRows:
    return _ast_node(dataset, rule, ast.FilterRows)


def _ast_node(dataset: ast.Dataset, rule: Any, kind: type[_Rule]) -> _Rule:
    assert rule.span is not None
    for stmt in dataset.body:
        if isinstance(stmt, ast.Clean):
            for node in stmt.rules:
                if (
                    isinstance(node, kind)
                    and node.span.line == rule.span.line
                    and (node.span.column == rule.span.column)
                ):
                    return node
    raise LookupError(f"no {kind.__name__} rule at line {rule.span.line}")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cannot_keep(key: str, found: RuleReview | None, span: Span | None) -> Diagnostic:
    """FM0772 (no rule removed it) or FM0773 (an exact dedupe removed it, or a near one
    whose threshold cannot rise above the row's similarity)."""
    if found is None:
        return error(
            "FM0772",
            f"no cleaning rule removed a row with id `{key}`",
            span,
            "the dataset",
            help="`fmc data review` lists the rows each rule removed; pass one of their ids",
        )
    near = isinstance(found.rule, Dedupe) and found.rule.near is not None
    why = (
        "its text is the same as an earlier row's, so no `near` threshold keeps it"
        if near
        else "an exact dedupe rule has no exceptions"
    )
    return error(
        "FM0773",
        f"row `{key}` was removed by `{found.title}`, and {why}",
        span,
        "the dataset",
        help="dedupe on more columns, or drop the rule",
    )
