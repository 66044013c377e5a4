"""The data and labels stages of `fmc run`: the build folder's SQL executed in DuckDB into
Parquet.

Data stage (`data:<dataset>`): read, cast, clean and split one dataset; write every split to
`run/data/<dataset>/<split>.parquet` (plus `all.parquet`) and `report.json` with rows in and
out of every rule. Labels stage (`labels:<labels>`): apply every labeling function in one
SQL pass, fill in Python functions, fit the label model, write the rows with their votes,
`fm_label` and `fm_probs` to `run/labels/<labels>.parquet`, with the LF analysis beside it.
Both are skipped when their cache key is unchanged; both check access first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fmlang.atomic import replacing, write_json_atomic
from fmlang.backends.artifacts import mismatch, read_text
from fmlang.backends.cache import StageCache, stage_key
from fmlang.backends.data import casts, forget
from fmlang.backends.data.access import Access
from fmlang.backends.data.engine import StepResult, connect, run_pipeline
from fmlang.check.datasets import outside_project
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.files import DataRoots, file_sha256, read_pattern, source_escapes, source_files
from fmlang.ir.nodes import Dataset, Spec
from fmlang.lower.labels import split_path
from fmlang.lower.pipeline import Pipeline, lower_dataset


@dataclass
class RunContext:
    """What every stage of one `fmc run` shares."""

    spec: Spec
    entry_dir: Path  # the entry spec's folder: IR `file` paths are relative to it
    build_dir: Path
    access: Access
    cache: StageCache
    force: bool = False
    log: Callable[[Any], None] = print  # text with rich markup, or a rich renderable
    diagnostics: list[Diagnostic] = field(default_factory=list)  # warnings, gate misses
    progress: Any = None  # the stages' display (`progress.StageProgress`), or None
    allowed_data: tuple[Path, ...] = ()  # `--allow-data`: folders outside the project
    engine: str = "duckdb"  # `--engine`: duckdb, or spark (backends/data/spark.py)

    def bar(self, title: str, total: int) -> Callable[[], None]:
        """Tell the stage's display (`progress.StageProgress`) it has `total` steps (`title`
        names them); the returned function advances it."""
        if self.progress is None:
            return lambda: None
        self.progress.steps(total, title)
        return lambda: self.progress.advance()

    def spec_dir(self, file: str) -> Path:
        return (self.entry_dir / file).parent


@dataclass(frozen=True)
class Outcome:
    stage: str
    skipped: bool
    outputs: tuple[str, ...]
    summary: dict[str, Any]


def data_stage(ctx: RunContext, dataset: Dataset) -> Outcome:
    stage = f"data:{dataset.name}"
    if ctx.engine == "spark":
        from fmlang.backends.data.spark import built_spark_pipeline

        pipeline, script = built_spark_pipeline(ctx.build_dir, dataset)
    else:
        pipeline, script = built_pipeline(ctx, dataset)
    files = source_files(dataset, ctx.spec_dir(dataset.file))
    names = [os.path.relpath(f, ctx.entry_dir) for f in files]
    _require_confined(ctx, stage, dataset, names)  # before a byte is read, hashes included
    forgotten = forget.forget_hash(ctx, dataset)  # the requests' file: FM0774 if it changed
    hashed = [(n, file_sha256(f)) for n, f in zip(names, files, strict=True)]
    key = stage_key("data", script, hashed, *([{"forget": forgotten}] if forgotten else []))
    folder = f"run/data/{dataset.name}"
    outputs = [split_path(dataset.name, s) for s in (*pipeline.splits, None)]
    outputs.append(f"{folder}/report.json")
    ctx.access.require(stage, names)  # cached rows are the dataset's too
    explain = _explain(pipeline, hashed, forgotten)
    if not ctx.force and ctx.cache.fresh(stage, key, explain):
        return Outcome(stage, True, tuple(outputs), {})
    tally = forget.Tally(pipeline)
    if ctx.engine == "spark":
        steps, counts = _run_spark(ctx, dataset, pipeline, tally)
    else:
        steps, counts = _run_duckdb(ctx, dataset, pipeline, tally)
    report = _report(dataset, steps, counts, key)
    if dataset.forget is not None:
        report["forget"] = {"file": dataset.forget.path, "removed": tally.removed}
    write_json_atomic(ctx.build_dir / folder / "report.json", report)
    forget.apply(ctx, dataset, tally.removed)  # audit once, supersede versions
    ctx.cache.record(stage, key, outputs, explain)
    return Outcome(stage, False, tuple(outputs), report)


MAX_EXPLAINED_FILES = 20  # more source files are not named one by one (the key has them)


def _explain(
    pipeline: Pipeline, hashed: list[tuple[str, str]], forgotten: str | None
) -> dict[str, str]:
    """The data stage's named inputs for the reasons a rerun gives: its steps (one line
    each, so a changed rule is named), each source file's digest, the forget file's."""
    explain = {"forget file": f"sha256:{forgotten[:12]}"} if forgotten else {}
    explain["the pipeline's steps"] = "\n".join(step.title for step in pipeline.steps)
    if len(hashed) <= MAX_EXPLAINED_FILES:
        explain |= {f"source `{name}`": f"sha256:{digest[:12]}" for name, digest in hashed}
    return explain


def _run_duckdb(ctx: RunContext, dataset: Dataset, pipeline: Pipeline,
                tally: forget.Tally) -> tuple[list[StepResult], dict[str | None, int]]:  # fmt: skip
    con = connect(ctx.spec_dir(dataset.file))
    try:
        if dataset.source is not None and dataset.source.kind == "hf_disk":
            _register_hf(con, ctx.spec_dir(dataset.file) / dataset.source.path, dataset)
        advance = ctx.bar("rules", len(pipeline.steps))
        tally.query = lambda sql: con.execute(sql).fetchone()

        def on_step(result: StepResult) -> None:
            ctx.log(_describe(result))
            tally.step_done()
            advance()

        steps = run_pipeline(con, pipeline, dataset, on_step)
        counts = {
            s: _write(con, pipeline.split_query(s), ctx.build_dir / split_path(dataset.name, s))
            for s in (*pipeline.splits, None)
        }
    finally:
        con.close()
    return steps, counts


def _run_spark(ctx: RunContext, dataset: Dataset, pipeline: Pipeline,
               tally: forget.Tally) -> tuple[list[StepResult], dict[str | None, int]]:  # fmt: skip
    from fmlang.backends.data.spark import run_data, spark_log, spark_session

    advance = ctx.bar("rules", len(pipeline.steps))

    def on_step(result: StepResult) -> None:
        ctx.log(_describe(result))
        tally.step_done()
        advance()

    spark = spark_session(spark_log(ctx.build_dir))
    tally.query = lambda sql: spark.sql(sql).first()
    targets = {s: ctx.build_dir / split_path(dataset.name, s) for s in (*pipeline.splits, None)}
    return run_data(spark, ctx.spec_dir(dataset.file), ctx.build_dir, pipeline, dataset,
                    on_step, targets)  # fmt: skip


def _require_confined(ctx: RunContext, stage: str, dataset: Dataset, names: list[str]) -> None:
    """Refuse (FM0730, logged) a source that reads outside the project and the allowed
    folders, symlinks resolved now: `fmc check` refused it too, unless the files changed
    since (a file replaced by a symlink)."""
    source = dataset.source
    if source is None:
        return
    options = {o.name: str(o.value) for o in source.options}
    pattern = read_pattern(source.kind, source.path, options.get("pattern"))
    roots = DataRoots.of([ctx.entry_dir], ctx.allowed_data)
    escapes = source_escapes(pattern, ctx.spec_dir(dataset.file), roots)
    if escapes:
        span = source.span.to_span() if source.span else None
        problem = outside_project(dataset.name, pattern, escapes, roots, span, "FM0730")
        ctx.access.refuse(stage, names, problem)


_STEP = re.compile(r"^-- step \d+: .*$", re.MULTILINE)


def built_pipeline(ctx: RunContext, dataset: Dataset) -> tuple[Pipeline, str]:
    """The pipeline the build folder holds (`data/<dataset>.duckdb.sql`): the spec's steps
    (tables, titles, spans for diagnostics) running the file's statements, and the file's
    text (the stage's cache key)."""
    import duckdb

    relative = f"data/{dataset.name}.duckdb.sql"
    script = read_text(ctx.build_dir, relative, dataset.name, dataset.span)
    pipeline = lower_dataset(dataset)
    blocks = _STEP.split(script)[1:]
    if len(blocks) != len(pipeline.steps):
        found = f"it has {len(blocks)} steps where the spec has {len(pipeline.steps)}"
        raise mismatch(relative, dataset.name, dataset.span, found)
    try:
        steps = tuple(
            replace(step, sql=tuple(s.query for s in duckdb.extract_statements(block)))
            for step, block in zip(pipeline.steps, blocks, strict=True)
        )
    except duckdb.Error as exc:
        raise mismatch(relative, dataset.name, dataset.span, str(exc)) from exc
    return replace(pipeline, steps=steps), script


def _describe(result: StepResult) -> str:
    from rich.markup import escape  # a title quotes the spec: `json("[tv]*.json")`

    removed = result.rows_in - result.rows_out
    change = f" (-{removed:,})" if removed else ""
    nulls = casts.describe(result.cast_nulls)
    return f"  {escape(result.title)}: {result.rows_out:,} rows{change}{escape(nulls)}"


def _report(dataset: Dataset, steps: list[StepResult], counts: dict[str | None, int],
            key: str) -> dict[str, Any]:  # fmt: skip
    return {
        "schema_version": "1",
        "dataset": dataset.name,
        "cache_key": key,
        "rules": [s.to_json() for s in steps],
        "splits": {(name or "all"): rows for name, rows in counts.items()},
    }


def _write(con: Any, query: str, target: Path) -> int:
    """COPY a query to Parquet atomically; the number of rows written."""
    with replacing(target) as tmp:
        con.execute(f"COPY ({query}) TO '{_quoted(tmp)}' (FORMAT parquet)")
    row = con.execute(f"SELECT count(*) FROM read_parquet('{_quoted(target)}')").fetchone()
    return int(row[0]) if row else 0


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _register_hf(con: Any, folder: Path, dataset: Dataset) -> None:
    """A dataset saved with `datasets.save_to_disk`, registered as `fm_hf_source`."""
    con.register("fm_hf_source", hf_table(folder, dataset))


def hf_table(folder: Path, dataset: Dataset) -> Any:
    """A dataset saved with `datasets.save_to_disk`: Arrow IPC stream files, in the split's
    subfolder for a DatasetDict, read with pyarrow, with their file names (`filename`)."""
    import pyarrow as pa

    source = dataset.source
    split = (
        next((str(o.value) for o in source.options if o.name == "split"), None) if source else None
    )
    root = folder / split if split else folder
    files = sorted(root.glob("*.arrow"))
    if not files:
        span = source.span if source else None
        raise StageError(
            error(
                "FM0701",
                f"no Arrow files for dataset `{dataset.name}` in `{root}`",
                span.to_span() if span else None,
                "nothing to read",
                help="point hf_disk at a folder written by `datasets.save_to_disk`",
            )
        )
    tables = []
    for file in files:
        part = pa.ipc.open_stream(pa.memory_map(str(file))).read_all()
        tables.append(part.append_column("filename", pa.array([file.name] * part.num_rows)))
    return pa.concat_tables(tables)
