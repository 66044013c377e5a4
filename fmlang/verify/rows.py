"""How many rows a model trains on, estimated before any data stage runs, so that the
solver can weigh optimizer steps when it picks a training batch.

The estimate is the source's row count times the trained split's share. It reads only
what is cheap: a Parquet footer's row count, the records of a small CSV / JSON Lines / JSON
file, and for large text files the average row length of their first megabytes. Cleaning
rules and labeling-function coverage are not applied (they are not known before `fmc run`),
so it is an upper bound in expectation. Counts are cached by (path, size, mtime): the
language server re-verifies on every edit.

Nothing here raises on a bad file: a source that cannot be read gives no estimate, and the
checker's own source checks report it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fmlang.files import source_files
from fmlang.ir.nodes import DataRef, Dataset, Spec

EXACT_BYTES = 16 << 20  # text sources up to this size are counted record by record
SAMPLE_BYTES = 4 << 20  # larger ones: rows extrapolated from this many leading bytes
MAX_FILES = 10_000  # a glob this wide is not counted (the estimate is skipped)

_cache: dict[tuple[str, int, int, str, bool], int] = {}


@dataclass(frozen=True)
class RowEstimate:
    """`rows` training rows, from `source_rows` in the source and the split's `share`."""

    rows: int
    source_rows: int
    share: float
    exact: bool  # every file counted record by record (no extrapolation)


def training_rows(spec: Spec, data: DataRef, spec_dir: Path) -> RowEstimate | None:
    """The rows a model training on `data` sees per epoch, or None when unknown."""
    dataset = spec.dataset(data.dataset)
    if dataset is None or dataset.source is None:
        return None
    counted = source_rows(dataset, spec_dir)
    if counted is None:
        return None
    total, exact = counted
    share = 1.0
    if data.split is not None and dataset.splits is not None:
        part = next((p for p in dataset.splits.parts if p.name == data.split), None)
        if part is None or part.files is not None:  # a split by files: its share is unknown
            return None
        share = part.fraction
    return RowEstimate(round(total * share), total, share, exact)


def source_rows(dataset: Dataset, spec_dir: Path) -> tuple[int, bool] | None:
    """(rows in every file the source matches, whether counted exactly), or None."""
    assert dataset.source is not None
    kind = dataset.source.kind
    if kind not in ("csv", "jsonl", "json", "parquet"):
        return None
    try:
        files = source_files(dataset, spec_dir)
    except OSError:
        return None
    if not files or len(files) > MAX_FILES:
        return None
    header = _header(dataset)
    total, exact = 0, True
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime_ns, kind, header)
        if key not in _cache:
            counted = _count(path, kind, header, stat.st_size)
            if counted is None:
                return None
            _cache[key] = counted
        total += _cache[key]
        exact = exact and (kind == "parquet" or stat.st_size <= EXACT_BYTES)
    return total, exact


def _header(dataset: Dataset) -> bool:
    assert dataset.source is not None
    for option in dataset.source.options:
        if option.name == "header":
            return option.value is not False
    return True


def _count(path: Path, kind: str, header: bool, size: int) -> int | None:
    try:
        if kind == "parquet":
            return _parquet_rows(path)
        if kind == "json" and size <= EXACT_BYTES:
            return _json_rows(path)
        if kind == "json":
            return None  # one large document: counting means parsing all of it
        return _text_rows(path, csv_header=header if kind == "csv" else None, size=size)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error):
        return None


def _parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq  # only with a Parquet source, and only the footer
    except ImportError:
        return None
    return int(pq.ParquetFile(path).metadata.num_rows)


def _json_rows(path: Path) -> int | None:
    """A JSON array of records, or an object keyed by id (WRENCH's layout)."""
    document = json.loads(path.read_bytes())
    if isinstance(document, list | dict):
        return len(document)
    return None


def _text_rows(path: Path, *, csv_header: bool | None, size: int) -> int:
    """Records in a CSV (`csv_header` says whether its first record is a header) or a JSON
    Lines file (`csv_header` None): exact up to EXACT_BYTES, else extrapolated."""
    with path.open("rb") as handle:
        data = handle.read(EXACT_BYTES if size <= EXACT_BYTES else SAMPLE_BYTES)
    if size > EXACT_BYTES:
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
    if csv_header is None:
        rows = sum(1 for line in data.splitlines() if line.strip())
    else:
        text = io.StringIO(data.decode("utf-8", errors="replace"), newline="")
        rows = sum(1 for record in csv.reader(text) if record) - int(csv_header)
    if size > EXACT_BYTES and data:
        rows = round(rows * size / len(data))
    return max(rows, 0)


def spec_folder(file: str) -> Path | None:
    """The folder of a declaring file when it is a real path on disk (the language server
    may verify unsaved buffers under names that are not)."""
    path = Path(file)
    return path.parent if os.path.isfile(path) else None
