"""Forget requests at run time: the data stage's side of `forget "file"`.

The rows go in SQL: the lowered pipeline has a forget step right after the typed one
(`lower/pipeline.py`), in the DuckDB and the Spark SQL alike, so no split, label output,
adapter or merge downstream is ever made from them. What this module adds around it:

- `forget_hash`: the file must still be the text the spec was checked against (its sha256
  is in the IR and so in the lock); one changed since is FM0774. The hash is part of the
  data stage's cache key, and through it of every stage downstream.
- `removed_by_request`: the rows each request matches, counted on the step's input while
  the engine still holds it.
- `apply`: each request applied for the first time (by dataset, request id and content) is
  recorded once in the audit log (request, dataset, rows removed, who asked and when); a
  request that removed no row is warned about (FM0775); and every registered version of a
  model trained on the dataset (and every merge made from one) is marked superseded, since
  it was trained on rows that are now forgotten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang.backends.data import audit
from fmlang.backends.data.audit_chain import signing_key
from fmlang.diagnostics import Diagnostic, error, warning
from fmlang.errors import StageError
from fmlang.files import file_sha256
from fmlang.ir.nodes import Dataset, ForgetRequest, Spec
from fmlang.lower.pipeline import Pipeline, Step
from fmlang.lower.sql import DIALECTS

if TYPE_CHECKING:
    from fmlang.backends.data.stages import RunContext

FORGET_ACTION = "forget"


def forget_hash(ctx: RunContext, dataset: Dataset) -> str | None:
    """The sha256 of the dataset's forget file (None without one); FM0774 when it is not
    the text the requests in the build were read from."""
    forget = dataset.forget
    if forget is None:
        return None
    path = ctx.spec_dir(dataset.file) / forget.path
    try:
        digest: str | None = file_sha256(path)
    except OSError:
        digest = None
    if digest != forget.sha256:
        span = forget.span.to_span() if forget.span else None
        why = "cannot be read now" if digest is None else "changed since the spec was checked"
        raise StageError(
            error(
                "FM0774",
                f"the forget file of dataset `{dataset.name}` {why}",
                span,
                "this file",
                help="run `fmc run` again: it checks the requests and rebuilds the pipeline "
                "from the file as it is then",
            )
        )
    return digest


def forget_step(pipeline: Pipeline) -> int | None:
    """The index of the pipeline's forget step, if it has one."""
    return next((i for i, s in enumerate(pipeline.steps) if s.table.endswith("_forget")), None)


def removed_by_request(step: Step, previous: str, dialect: str,
                       query: Callable[[str], Sequence[Any] | None]) -> dict[str, int]:  # fmt: skip
    """Rows of `previous` (the forget step's input) that each request matches; a row two
    requests name counts for both."""
    if not step.forget:
        return {}
    d = DIALECTS[dialect]
    sums = ", ".join(f"sum(CASE WHEN {cond} THEN 1 ELSE 0 END)" for _, cond in step.forget)
    row = query(f"SELECT {sums} FROM {d.quote(previous)}") or ()
    return {request: int(value or 0) for (request, _), value in zip(step.forget, row, strict=False)}


@dataclass
class Tally:
    """Told after each step of `pipeline` runs (in order); right after the forget step,
    counts each request's rows with `query` (one row of results for SQL, on the engine that
    still holds the step's input)."""

    pipeline: Pipeline
    query: Callable[[str], Sequence[Any] | None] | None = None
    removed: dict[str, int] = field(default_factory=dict)
    done: int = 0

    def step_done(self) -> None:
        at = forget_step(self.pipeline)
        if at and self.done == at and self.query is not None:
            step, previous = self.pipeline.steps[at], self.pipeline.steps[at - 1].table
            self.removed = removed_by_request(step, previous, self.pipeline.dialect, self.query)
        self.done += 1


def request_digest(request: ForgetRequest) -> str:
    """What identifies one application of a request: its content, spans aside."""
    text = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def apply(ctx: RunContext, dataset: Dataset, removed: dict[str, int]) -> list[dict[str, Any]]:
    """Record (once) the requests applied in this run, warn about those that removed
    nothing, and mark superseded the versions trained on rows they removed; the audit
    records written."""
    forget = dataset.forget
    if forget is None:
        return []
    from rich.markup import escape

    stage = f"data:{dataset.name}"
    done = recorded(ctx.access.log, dataset.name)
    records = []
    for request in forget.requests:
        digest = request_digest(request)
        if (request.request, digest) in done:
            continue
        count = removed.get(request.request, 0)
        records.append(_record(ctx, stage, dataset, request, digest, count))
        who = escape(f"{request.request} ({request.by}, {request.at})")  # text the user wrote
        ctx.log(f"  applied forget request {who}: {count:,} row{'s' if count != 1 else ''}")
        if count == 0:
            ctx.diagnostics.append(_removed_nothing(dataset, request))
    applied = [r for r in records if r["rows_removed"]]
    if applied:  # first: marking again is a no-op, and the audit entries make it "done"
        supersede(ctx, dataset.name, applied)
    for log in (ctx.access.log, *ctx.access.copies):
        audit.append_many(log, records, signing_key())
    return records


def recorded(log: Path, dataset: str) -> set[tuple[str, str]]:
    """(request, digest) of every forget request the audit log records for `dataset`."""
    out: set[tuple[str, str]] = set()
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line: the next append quarantines it
        if (
            isinstance(entry, dict)
            and entry.get("action") == FORGET_ACTION
            and entry.get("dataset") == dataset
        ):
            out.add((str(entry.get("request")), str(entry.get("request_digest"))))
    return out


def _record(ctx: RunContext, stage: str, dataset: Dataset, request: ForgetRequest,
            digest: str, count: int) -> dict[str, Any]:  # fmt: skip
    forget = dataset.forget
    assert forget is not None
    return {
        "principal": ctx.access.principal,
        "established": ctx.access.established,
        "action": FORGET_ACTION,
        "stage": stage,
        "decision": "applied",
        "dataset": dataset.name,
        "request": request.request,
        "requested_by": request.by,
        "requested_at": request.at,
        "rows_removed": count,
        "request_digest": digest,
        "file": forget.path,
        "spec": ctx.access.spec_hash,
    }


def _removed_nothing(dataset: Dataset, request: ForgetRequest) -> Diagnostic:
    span = request.span.to_span() if request.span else None
    return warning(
        "FM0775",
        f"forget request `{request.request}` matches no row of dataset `{dataset.name}`",
        span,
        "removed nothing",
        help="check its ids (values of the `@id` column) or its condition; it stays applied, "
        "and is recorded in the audit log",
    )


def trained_on(spec: Spec, dataset: str) -> set[str]:
    """The models whose training data is `dataset` (directly or through labels on it)."""
    return {
        m.name
        for m in spec.models
        if m.training is not None and m.training.data is not None
        and m.training.data.dataset == dataset
    }  # fmt: skip


def supersede(ctx: RunContext, dataset: str, applied: list[dict[str, Any]]) -> list[str]:
    """Mark superseded every registered version of a model trained on `dataset`, and every
    merge made from such a version; the refs marked now."""
    from fmlang.backends.registry import INDEX_FILE, REGISTRY_DIR, Registry

    root = ctx.build_dir / REGISTRY_DIR
    if not (root / INDEX_FILE).is_file():
        return []
    registry = Registry(root)
    models = trained_on(ctx.spec, dataset)
    requests = ", ".join(f"`{r['request']}`" for r in applied)
    removed = sum(int(r["rows_removed"]) for r in applied)
    plural = "s" if len(applied) > 1 else ""
    reason = (
        f"trained on rows of dataset `{dataset}` that forget request{plural} {requests} "
        f"removed ({removed} row{'s' if removed != 1 else ''})"
    )
    affected: set[str] = set()
    marked: list[str] = []
    for version in registry.versions():  # oldest first: a merge's parents come before it
        lineage = version.lineage
        if (lineage.kind != "merge" and version.name in models) or affected & set(lineage.parents):
            affected.add(version.hash)
            if not lineage.superseded:
                registry.mark_superseded(version, reason)
                marked.append(version.ref)
    if marked:
        ctx.log(f"  superseded (trained on forgotten rows): {', '.join(marked)}")
    return marked
