"""What `fmc check` can know about a dataset's files without reading them: that the source
matches some, and that the columns the schema reads are there with compatible types.

Only headers and metadata are read, from the first matching file (as the engine takes its
columns from the first file): a CSV's first line, a JSON Lines file's first record, a JSON
file's first record (of an array, of `records`, or of an object keyed by id), a Parquet
file's footer (pyarrow, imported only then). Files are opened as `reading.py` opens spec
files: without blocking, refused unless regular, read up to a bound; a file that cannot be
read this way is left to the run. Only sources already confined to the project are looked
at (the caller checks confinement first).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.check.context import Ctx
from fmlang.diagnostics import Span
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast

HEAD_BYTES = 1 << 20  # a header or a first record longer than this is not checked
WHOLE_JSON_BYTES = 8 << 20  # `records = "a.b"`: the file is parsed when it is at most this
NUMBER, STRING, BOOL, DATE, NESTED = "number", "string", "bool", "date", "nested"
# Schema type → the value kinds a source may hold for it (strings are cast at run time).
ACCEPTS = {
    "int": {NUMBER, STRING},
    "float": {NUMBER, STRING},
    "bool": {BOOL, STRING},
    "date": {DATE, STRING},
    "timestamp": {DATE, STRING},
    "label": {NUMBER, STRING, BOOL},
    "category": {NUMBER, STRING, BOOL, DATE},
    "string": {NUMBER, STRING, BOOL, DATE, NESTED},
    "text": {NUMBER, STRING, BOOL, DATE, NESTED},
}


@dataclass(frozen=True)
class Stored:
    """A column the schema reads from the source: its name, type, field path, span."""

    name: str
    type: str
    path: tuple[str, ...]
    span: Span


def check_source_files(ctx: Ctx, dataset: ast.Dataset, kind: str, pattern: str,
                       options: dict[str, str], span: Span, spec_dir: Path) -> None:  # fmt: skip
    files = _matches(spec_dir, pattern, kind)
    name = dataset.name.name
    if not files:
        ctx.error(
            "FM0388",
            f"the source of dataset `{name}` matches no files: `{pattern}`",
            span,
            "nothing here",
            "paths are relative to the spec's folder; check the path or the glob",
        )
        return
    if kind in ("files", "hf_disk"):
        return
    first = files[0]
    try:
        found = _columns(first, kind, options)
    except (OSError, ValueError, UnicodeDecodeError):
        return  # unreadable or malformed here: the run reports it with the engine's words
    if found is None:
        return
    shown = os.path.relpath(first, spec_dir)
    for column in _stored(dataset):
        _check_column(ctx, name, column, found, shown)


def _matches(spec_dir: Path, pattern: str, kind: str) -> list[Path]:
    matches = sorted(glob.glob(str(spec_dir / pattern), recursive=True))
    if kind == "hf_disk":
        return [Path(m) for m in matches if Path(m).is_dir()]
    out: list[Path] = []
    for m in matches:
        path = Path(m)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            out.append(path)
    return out


def _stored(dataset: ast.Dataset) -> Iterator[Stored]:
    for stmt in dataset.body:
        if not isinstance(stmt, ast.Schema):
            continue
        for field in stmt.fields:
            if field.default is not None:
                continue
            path = field.name.name
            for option in field.options:
                if (
                    isinstance(option, ast.Setting)
                    and option.key.name == "from"
                    and isinstance(option.value, ast.String)
                ):
                    path = option.value.value
            yield Stored(field.name.name, field.type.name.name, tuple(path.split(".")), field.span)


def _check_column(ctx: Ctx, dataset: str, column: Stored, found: dict[str, Any],
                  shown: str) -> None:  # fmt: skip
    value: Any = found
    for depth, part in enumerate(column.path):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(column.path[:depth]) or "the records"
            present = sorted(value) if isinstance(value, dict) else []
            listed = ", ".join(f"`{c}`" for c in present[:12])
            ctx.error(
                "FM0389",
                f"column `{column.name}` of dataset `{dataset}` is not in `{shown}`"
                + (f" (no `{'.'.join(column.path[: depth + 1])}`)" if len(column.path) > 1 else ""),
                column.span,
                "not in the data",
                did_you_mean(part, present)
                or (f"{where} have {listed}" if present else "declare the columns the files have"),
            )
            return
        value = value[part]
    kind = value if isinstance(value, str) and value in _KINDS and value != "null" else None
    if kind is not None and kind not in ACCEPTS.get(column.type, {kind}):
        ctx.error(
            "FM0390",
            f"column `{column.name}` of dataset `{dataset}` is `{column.type}`, but `{shown}` "
            f"holds {_described(kind)} there",
            column.span,
            "type does not match the data",
            f"declare the type the data has ({_suggest(kind)}), or fix the data",
        )


_KINDS = {NUMBER, STRING, BOOL, DATE, NESTED, "null"}


def _described(kind: str) -> str:
    return {
        NUMBER: "numbers",
        STRING: "text",
        BOOL: "true/false values",
        DATE: "dates",
        NESTED: "nested records or lists",
    }[kind]


def _suggest(kind: str) -> str:
    return {
        NUMBER: "`int` or `float`",
        STRING: "`string`",
        BOOL: "`bool`",
        DATE: "`date` or `timestamp`",
        NESTED: '`string`, or a field inside it with `{ from = "a.b" }`',
    }[kind]


# ---- reading the first record ---------------------------------------------------------


def _head(path: Path, limit: int = HEAD_BYTES) -> bytes | None:
    """Up to `limit` bytes from the start of a regular file; None for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _columns(path: Path, kind: str, options: dict[str, str]) -> dict[str, Any] | None:
    """The first record's fields → value kinds (nested records as dicts), or None when the
    file says nothing checkable."""
    if kind == "parquet":
        return _parquet(path)
    head = _head(path, WHOLE_JSON_BYTES if kind == "json" else 1 << 16)
    if head is not None and kind != "json" and b"\n" not in head:
        head = _head(path, HEAD_BYTES)  # a long first line
    if head is None:
        return None
    text = head.decode("utf-8-sig")
    if kind == "csv":
        return _csv(text, options)
    if kind == "jsonl":
        line = text.split("\n", 1)[0]
        record = json.loads(line) if line.strip() else None
        return _at(record, options.get("records"))
    if kind == "json":
        return _json(text, options, complete=len(head) < WHOLE_JSON_BYTES)
    return None


def _csv(text: str, options: dict[str, str]) -> dict[str, Any] | None:
    if options.get("header", "true").lower() == "false":
        return None
    line = text.split("\n", 1)[0] if "\n" in text else None
    if line is None:
        return None  # a header longer than the bound
    delimiter = options.get("delimiter") or _sniffed(line)
    row = next(csv.reader(io.StringIO(line.rstrip("\r")), delimiter=delimiter[:1]), [])
    return {name.strip(): "string_unknown" for name in row}


def _sniffed(line: str) -> str:
    """The delimiter DuckDB's sniffer would find in a header line: the most frequent of its
    candidates outside quotes (`,` when none occurs)."""
    unquoted = "".join(part for i, part in enumerate(line.split('"')) if i % 2 == 0)
    counts = {c: unquoted.count(c) for c in (",", "|", ";", "\t")}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


def _json(text: str, options: dict[str, str], complete: bool) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    records = options.get("records")
    if records or options.get("keyed"):
        if not complete:
            return None
        data = json.loads(text)
        if options.get("keyed"):
            first = next(iter(data.values()), None) if isinstance(data, dict) else None
            found = _kinds(first)
            if isinstance(found, dict):
                found[options["keyed"]] = STRING
            return found if isinstance(found, dict) else None
        return _at(data, records)
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] == "[":
        rest = text[start + 1 :].lstrip()
        if rest.startswith("]"):
            return None
        first, _ = decoder.raw_decode(rest)
        found = _kinds(first)
        return found if isinstance(found, dict) else None
    if not complete:
        return None
    found = _kinds(json.loads(text))
    return found if isinstance(found, dict) else None


def _at(data: Any, records: str | None) -> dict[str, Any] | None:
    for part in (records or "").split(".") if records else ():
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(data, list):
        data = data[0] if data else None
    found = _kinds(data)
    return found if isinstance(found, dict) else None


def _kinds(value: Any) -> Any:
    """A JSON value → its kind (nested objects → dicts of kinds)."""
    if isinstance(value, dict):
        return {str(k): _kinds(v) for k, v in value.items()}
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return NESTED
    return "null"


def _parquet(path: Path) -> dict[str, Any] | None:
    head = _head(path, 4)
    if head is None or head != b"PAR1":
        return None
    import pyarrow.parquet as pq  # only when a Parquet source exists

    schema = pq.read_schema(path)
    return {field.name: _arrow_kind(field.type) for field in schema}


def _arrow_kind(kind: Any) -> Any:
    import pyarrow.types as t

    if t.is_struct(kind):
        return {kind.field(i).name: _arrow_kind(kind.field(i).type) for i in range(kind.num_fields)}
    if t.is_boolean(kind):
        return BOOL
    if t.is_integer(kind) or t.is_floating(kind) or t.is_decimal(kind):
        return NUMBER
    if t.is_string(kind) or t.is_large_string(kind) or t.is_dictionary(kind):
        return STRING
    if t.is_temporal(kind):
        return DATE
    if t.is_list(kind) or t.is_large_list(kind) or t.is_map(kind):
        return NESTED
    return "null"
