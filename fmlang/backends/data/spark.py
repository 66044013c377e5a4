"""`fmc run --engine spark`: the build folder's Spark SQL on a local pyspark session.

The data and labels stages run the same files `fmc build` wrote (`data/<dataset>.spark.sql`,
`labels/<labels>.spark.sql`), statement by statement, nothing lowered again; the outputs are
those of the DuckDB engine, row for row (tests/test_spark_equality.py): the same Parquet
files at the same paths, the same report of rows in and out per rule.

One session per process (`spark_session`), `local[*]` unless the caller asks for fewer cores
(tests: 2 cores and 4 shuffle partitions; otherwise Spark's 200, merged by adaptive query
execution where the data is small), with the UI off, timestamps without time zone (DuckDB's
TIMESTAMP) in UTC, and the UDFs fmc registers on DuckDB (`udfs`) as Arrow UDFs. The JVM's
output (log4j, JVM warnings, Python workers' stderr) goes to `run/spark.log` in the build
folder, never to the terminal. Relative paths in the SQL resolve like DuckDB's
`file_search_path`: the local file system's working directory is set to the spec's folder
for a data stage and to the build folder for a labels stage.

Each step's view is cached once created, so counting its rows (the rule report) and the
next step read it without recomputing the steps before it. Outputs are written by Spark
(one Parquet file per split, in `fm_row` order) and moved into place atomically.

Where the engines could differ, the Spark SQL is written to agree: `fm_row` numbers rows by
file path then position in the file (DuckDB's `rowid`), `length` and `count` are BIGINT,
`words()` is the same Arrow UDF, near-duplicate removal uses portable MinHash hashes
(`fmlang.lower.near_dedupe`), CSV is read with RFC 4180 quoting and multi-line fields.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang.atomic import replacing
from fmlang.backends.artifacts import mismatch, read_text
from fmlang.backends.data import casts
from fmlang.backends.data.engine import StepResult, _missing_column, no_source_files
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.ir.nodes import Dataset
from fmlang.lower.pipeline import CastCheck, Pipeline, Step, lower_dataset

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL = "pip install 'fmlang[spark]'"
_session: SparkSession | None = None


def spark_session(log_path: Path, cores: int | None = None) -> SparkSession:
    """The process's Spark session, started on first use (10-20 s); its JVM writes its
    output to `log_path`. FM0765 without pyspark, FM0766 without Java or when the JVM fails."""
    global _session
    if _session is not None and _session.sparkContext._jsc is not None:
        return _session
    try:
        import pyspark  # noqa: F401
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise StageError(_not_installed(str(exc))) from exc
    java = _java()
    if java is None:
        raise StageError(_cannot_start("Java is not installed (no `java` on PATH, no JAVA_HOME)"))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # UDF workers: this interpreter
    builder = (
        SparkSession.builder.master(f"local[{cores or '*'}]")
        .appName("fmc")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(2 * cores) if cores else "200")
        .config("spark.sql.adaptive.enabled", "true")  # merges small shuffle partitions
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.ansi.enabled", "false")  # TRY_CAST-like casts, as DuckDB's
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=warn")
        # Not `spark-warehouse/` in the user's working folder (Spark's default).
        .config("spark.sql.warehouse.dir", str(log_path.parent.resolve() / "spark-warehouse"))
    )
    _quiet_python_loggers(log_path)
    try:
        with _output_to(log_path):  # the JVM inherits these descriptors for good
            session = builder.getOrCreate()
    except Exception as exc:  # py4j/JVM start-up failures have no common base class
        raise StageError(_cannot_start(f"{type(exc).__name__}: {exc}".splitlines()[0])) from exc
    session.sparkContext.setLogLevel("ERROR")
    _register_udfs(session)
    _session = session
    return session


def stop_session() -> None:
    global _session
    if _session is not None:
        _session.stop()
        _session = None


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


@contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 point at the log while the JVM is launched (it inherits
    them); Python's own streams are flushed first and restored after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _quiet_python_loggers(log_path: Path) -> None:
    """pyspark logs failed queries itself (a JSON line with a Java stack trace): to the log."""
    handler = logging.FileHandler(log_path)
    for name in ("pyspark", "py4j"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False


def _register_udfs(spark: SparkSession) -> None:
    from pyspark.sql.pandas.functions import ArrowUDFType, arrow_udf

    from fmlang.backends.data import udfs

    scalar = ArrowUDFType.SCALAR
    with warnings.catch_warnings():  # the type is given, the functions' hints are `Any`
        warnings.simplefilter("ignore", UserWarning)
        spark.udf.register("fm_nfkc", arrow_udf(udfs.nfkc, "string", scalar))
        spark.udf.register("fm_strip_accents", arrow_udf(udfs.strip_accents, "string", scalar))
        spark.udf.register("fm_words", arrow_udf(udfs.words, "bigint", scalar))


@contextmanager
def working_directory(spark: SparkSession, folder: Path) -> Iterator[None]:
    """Relative paths in the SQL resolve under `folder` (the local file system's working
    directory, which Spark's path resolution uses), as DuckDB's `file_search_path`."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(hadoop)
    before = fs.getWorkingDirectory()
    fs.setWorkingDirectory(jvm.org.apache.hadoop.fs.Path(str(folder.resolve())))
    try:
        yield
    finally:
        fs.setWorkingDirectory(before)


# ---- the build folder's Spark SQL ---------------------------------------------------------

_STEP = re.compile(r"^-- step \d+: .*$", re.MULTILINE)


def built_spark_pipeline(build_dir: Path, dataset: Dataset) -> tuple[Pipeline, str]:
    """The pipeline in `data/<dataset>.spark.sql`: the spec's steps (tables, titles, spans)
    running the file's statements, and the file's text (the stage's cache key)."""
    relative = f"data/{dataset.name}.spark.sql"
    script = read_text(build_dir, relative, dataset.name, dataset.span)
    pipeline = lower_dataset(dataset, "spark")
    blocks = _STEP.split(script)[1:]
    if len(blocks) != len(pipeline.steps):
        found = f"it has {len(blocks)} steps where the spec has {len(pipeline.steps)}"
        raise mismatch(relative, dataset.name, dataset.span, found)
    steps = tuple(
        replace(step, sql=tuple(split_statements(block)))
        for step, block in zip(pipeline.steps, blocks, strict=True)
    )
    return replace(pipeline, steps=steps), script


def split_statements(text: str) -> list[str]:
    """Spark SQL text → statements: `;` ends one outside quotes ('…' with backslash escapes,
    "…", `…`) and `--` comments, which are dropped."""
    out: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch in "'\"`":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" and ch != "`" else 1
            current.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == ";":
            out.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    out.append("".join(current).strip())
    return [s for s in out if s]


# ---- the data stage -------------------------------------------------------------------------


Counts = dict[str | None, int]  # rows written per split (None: all of them)


def run_data(spark: SparkSession, spec_dir: Path, build_dir: Path, pipeline: Pipeline,
             dataset: Dataset, on_step: Callable[[StepResult], None],
             targets: dict[str | None, Path]) -> tuple[list[StepResult], Counts]:  # fmt: skip
    """Run every step, counting the rows each leaves, and write every split's Parquet file;
    the steps' results and the rows written per split."""
    results: list[StepResult] = []
    with working_directory(spark, spec_dir):
        if dataset.source is not None and dataset.source.kind == "hf_disk":
            _register_hf(spark, spec_dir / dataset.source.path, dataset)
        rows = 0
        for index, step in enumerate(pipeline.steps):
            row = _execute(spark, step, dataset, index, pipeline)
            after = int(row[0])
            nulls = casts.cast_nulls(step, row) if step.casts else {}
            result = StepResult(step.title, rows if index else after, after, _line(step), nulls)
            problem = casts.failure(dataset, step, nulls, partial(_examples, spark, step))
            if problem is not None:
                raise StageError(problem)
            results.append(result)
            on_step(result)
            rows = after
        counts = _write(spark, pipeline, targets, build_dir)
        for step in pipeline.steps:
            spark.catalog.dropTempView(step.table)
    return results, counts


def _line(step: Step) -> int | None:
    return step.span.line if step.span else None


def _execute(spark: SparkSession, step: Step, dataset: Dataset, index: int,
             pipeline: Pipeline) -> tuple[Any, ...]:  # fmt: skip
    """Run the step's statements, cache its view, and count its rows (then, for the typed
    step, the values each cast turned into NULL: `casts.count_query`)."""
    try:
        for statement in step.sql:
            spark.sql(statement)
        spark.catalog.cacheTable(step.table)
        row = tuple(spark.sql(casts.count_query(step, "spark")).first() or (0,))
    except Exception as exc:  # pyspark's errors and py4j's share no base class
        columns = _columns_of(spark, pipeline.steps[index - 1].table) if index else []
        raise StageError(_diagnose(exc, step, dataset, index, columns)) from exc
    if index:
        spark.catalog.uncacheTable(pipeline.steps[index - 1].table)
    return row


def _examples(spark: SparkSession, step: Step, check: CastCheck) -> list[str]:
    return [str(r[0]) for r in spark.sql(casts.examples_query(step, check, "spark")).collect()]


def _columns_of(spark: SparkSession, table: str) -> list[str]:
    try:
        names = spark.table(f"`{table}`").columns
    except Exception:  # the view itself may be what failed
        return []
    return [c for c in names if not c.startswith("fm_") and c != "filename"]


_UNRESOLVED = re.compile(r"with name `(?:[^`]*`\.`)?([^`]+)` cannot be resolved")


def _diagnose(exc: Exception, step: Step, dataset: Dataset, index: int,
              columns: list[str]) -> Diagnostic:  # fmt: skip
    message = _message(exc)
    source = dataset.source
    where = step.span or (source.span if source else None) or dataset.span
    span = where.to_span() if where else None
    if index == 0 and ("PATH_NOT_FOUND" in message or "does not exist" in message):
        return no_source_files(dataset, span)
    missing = _UNRESOLVED.search(message)
    if missing and index == 1:
        return _missing_column(dataset, missing.group(1), columns)
    return error(
        "FM0767",
        f"step `{step.title}` of dataset `{dataset.name}` failed in Spark: {message}",
        span,
        "this step",
        help="check the rule's columns and types against the data (the SQL is in the build "
        f"folder: data/{dataset.name}.spark.sql; Spark's log: run/spark.log)",
    )


_PYTHON_ERROR = re.compile(r"^\w+(?:Error|Exception): .*$", re.MULTILINE)


def _message(exc: Exception) -> str:
    """The first line of Spark's message, without the JVM stack trace (for a failure in a
    Python worker, the Python exception's line)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    if "Python worker" in first:
        found = _PYTHON_ERROR.findall(text)
        first = found[-1] if found else first
    return first[:500]


def _write(spark: SparkSession, pipeline: Pipeline, targets: dict[str | None, Path],
           build_dir: Path) -> Counts:  # fmt: skip
    """The final table's rows (`pipeline.split_query`: the schema's columns in `fm_row`
    order) as one Parquet file for all of them and one per split, in two Spark jobs (one
    task each, sorting within it: no shuffle), moved atomically into place; the rows
    written per split."""
    import pyarrow.parquet as pq
    from pyspark.sql.functions import col

    def column(name: str) -> Any:
        return col("`" + name.replace("`", "``") + "`")

    scratch = build_dir / "run" / ".spark-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    final = spark.table(f"`{pipeline.final_table}`").coalesce(1)
    columns = [column(c) for c in pipeline.columns]
    final.sortWithinPartitions(column("fm_row")).select(*columns).write.parquet(
        str((scratch / "all").resolve())
    )
    if pipeline.splits:
        by_split = final.sortWithinPartitions(column("fm_split"), column("fm_row"))
        by_split.select(*columns, column("fm_split")).write.partitionBy("fm_split").parquet(
            str((scratch / "splits").resolve())
        )
    (everything,) = sorted((scratch / "all").glob("part-*.parquet"))
    schema = pq.read_schema(everything)
    counts: Counts = {}
    for split, target in targets.items():
        parts = sorted((scratch / "splits" / f"fm_split={split}").glob("part-*.parquet"))
        with replacing(target) as tmp:
            if split is None:
                os.replace(everything, tmp)
            elif parts:
                (part,) = parts
                os.replace(part, tmp)
            else:  # no rows in this split: an empty file with the columns, as DuckDB's
                pq.write_table(schema.empty_table(), tmp)
        counts[split] = int(pq.ParquetFile(target).metadata.num_rows)
    shutil.rmtree(scratch, ignore_errors=True)
    return counts


def _register_hf(spark: SparkSession, folder: Path, dataset: Dataset) -> None:
    """`hf_disk`: the Arrow files as the view `fm_hf_source`, read as the DuckDB engine
    reads them."""
    from fmlang.backends.data.stages import hf_table

    spark.createDataFrame(hf_table(folder, dataset)).createOrReplaceTempView("fm_hf_source")


# ---- the labels stage -----------------------------------------------------------------------


def label_table(spark: SparkSession, build_dir: Path, sql: str, name: str, span: Any) -> Any:
    """The label-matrix query's rows as an Arrow table, in the Parquet file's order."""
    try:
        with working_directory(spark, build_dir):
            return spark.sql(sql).toArrow()
    except Exception as exc:  # pyspark's errors and py4j's share no base class
        raise StageError(
            error(
                "FM0767",
                f"the label-matrix query of `{name}` failed in Spark: {_message(exc)}",
                span.to_span() if span else None,
                "these labeling functions",
                help=f"the SQL is in the build folder: labels/{name}.spark.sql; Spark's log: "
                "run/spark.log",
            )
        ) from exc


def built_label_sql(build_dir: Path, name: str, span: Any, relative: str | None = None) -> str:
    text = read_text(build_dir, relative or f"labels/{name}.spark.sql", name, span)
    (statement,) = split_statements(text)
    return statement


# ---- diagnostics ----------------------------------------------------------------------------


def _not_installed(detail: str) -> Diagnostic:
    return error(
        "FM0765",
        f"`--engine spark` needs pyspark, which is not installed ({detail})",
        help=f"{INSTALL}, or run with `--engine duckdb` (the default)",
    )


def _cannot_start(detail: str) -> Diagnostic:
    return error(
        "FM0766",
        f"the local Spark session cannot start: {detail}",
        help="install Java 17 or later and set JAVA_HOME (or put `java` on PATH); Spark's "
        "own output is in run/spark.log in the build folder",
    )


def spark_log(build_dir: Path) -> Path:
    return build_dir / "run" / "spark.log"
