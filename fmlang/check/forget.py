"""Forget requests: `forget "forget/requests.jsonl"` in a `dataset` block names a JSON Lines
file, one request per line, each removing rows of the dataset right after they are read:

```
{"request": "gdpr-7", "by": "user:ana", "at": "2026-11-30", "ids": ["c-12", "c-40"]}
{"request": "gdpr-8", "by": "dpo@example.com", "at": "2026-12-01", "where": "AUTHOR == \\"Jo\\""}
```

`request` names the request (unique in the file), `by` who asked and `at` when (an ISO 8601
date or time); exactly one of `ids` (values of the dataset's `@id` column) or `where` (a
condition over the dataset's columns, in the language `drop where` uses) says which rows.
`reason` is optional free text.

The file is read when the spec is checked (every run checks first): a file that is missing,
outside the project or too large is FM0381 at the `forget` setting; a line that is not a
request is FM0382 at that line of the file; `ids` on a dataset without an `@id` column is
FM0383; a `where` that does not parse is FM0384, and one that does not type-check gets the
expression checker's own diagnostics, all at the request's line. The requests read are kept
on the `Program` (`program.forget`) for the IR builder, with the file's sha256, so the data
stage can refuse a file that changed since (FM0774) and the cache key follows its content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fmlang.check.context import Ctx
from fmlang.check.datasets import columns_of, string_literal
from fmlang.check.expressions import BOOL, ExprChecker
from fmlang.check.program import Program, SourceFile
from fmlang.check.settings import setting
from fmlang.diagnostics import Diagnostic, Label, Severity, Span, error
from fmlang.files import DataRoots
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast
from fmlang.syntax.parser import parse_whole

MAX_FORGET_BYTES = 16 << 20
FIELDS = ("request", "by", "at", "ids", "where", "reason")
# The request's `where` is parsed as the condition of this rule, on the first line.
_PREFIX = "dataset fm_forget { clean { drop where "
_SUFFIX = " } }"
_WHERE_VALUE = re.compile(r'"where"\s*:\s*"')


@dataclass(frozen=True)
class Request:
    """One line of a forget file: `ids` (as text) or `where`, never both."""

    request: str
    by: str
    at: str
    ids: tuple[str, ...]
    where: ast.Expr | None
    span: Span  # the request's line in the file


@dataclass(frozen=True)
class ForgetFile:
    """A dataset's forget file as read: its path as the spec writes it, its sha256, and the
    requests on its lines that check clean (a file with errors fails the check)."""

    path: str
    sha256: str
    requests: tuple[Request, ...]


class _RequestCtx(Ctx):
    """A checker context whose diagnostics about a parsed `where` point into the forget
    file: spans on the wrapper's first line move to the request's line and column."""

    def __init__(self, program: Program, source: SourceFile, shown: str, line: int, column: int,
                 offset: int) -> None:  # fmt: skip
        super().__init__(program, source)
        self.shown, self.line, self.column, self.offset = shown, line, column, offset

    def report(self, diagnostic: Diagnostic) -> None:
        super().report(self.moved(diagnostic))

    def moved(self, diagnostic: Diagnostic) -> Diagnostic:
        labels = tuple(replace(lb, span=self._span(lb.span)) for lb in diagnostic.labels)
        return replace(diagnostic, labels=labels)

    def _span(self, span: Span) -> Span:
        if span.file != self.shown:
            return span
        first = span.column - len(_PREFIX) + self.column - 1 if span.line == 1 else self.column
        last = span.end_column - len(_PREFIX) + self.column - 1 if span.end_line == 1 else first
        first, last = max(first, 1), max(last, first)
        return Span(self.shown, self.line, first, self.line, last,
                    self.offset + first - 1, self.offset + last - 1)  # fmt: skip


def check_forget_files(program: Program, roots: DataRoots,
                       folders: dict[str, Path] | None = None) -> None:  # fmt: skip
    """Read and check every dataset's forget file (confined to `roots`); keep the requests
    on `program.forget[(file, dataset)]`. Not one of `PASSES`: the roots come from the
    command line (as for `check_source_confinement`). `folders`: the folder of a file whose
    key is not its path (a document checked from text)."""
    for source, symbol in program.declarations("dataset"):
        assert isinstance(symbol.node, ast.Dataset)
        dataset = symbol.node
        found = setting(dataset.body, "forget")
        value = found.value if isinstance(found, ast.Setting) else None
        ctx = Ctx(program, source)
        literal = string_literal(ctx, value) if value is not None else None
        if literal is None:
            continue  # no forget file, or not a string (the settings check says so)
        spec_dir = (folders or {}).get(source.path) or Path(source.path).resolve().parent
        text = _read(ctx, dataset.name.name, literal, spec_dir, roots)
        if text is None:
            continue
        shown = os.path.join(os.path.dirname(source.path), literal.value)
        requests = _requests(ctx, dataset, text, shown)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        program.forget[(source.path, dataset.name.name)] = ForgetFile(
            literal.value, digest, requests
        )


def _read(ctx: Ctx, dataset: str, literal: ast.String, spec_dir: Path,
          roots: DataRoots) -> str | None:  # fmt: skip
    """The file's text, or None after FM0381 saying why there is none."""
    path = spec_dir / literal.value
    why = None
    if Path(literal.value).is_absolute() or not roots.holds(path):
        why = f"it is outside {roots.describe()}"
    else:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                why = "it is not a regular file"
            elif info.st_size > MAX_FORGET_BYTES:
                why = f"it is larger than {MAX_FORGET_BYTES >> 20} MiB"
            else:
                return path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            why = "there is no such file"
        except UnicodeDecodeError:
            why = "it is not UTF-8 text"
        except OSError as exc:
            why = exc.strerror or str(exc)
    ctx.error(
        "FM0381",
        f"the forget file of dataset `{dataset}` cannot be read: {why}",
        literal.span,
        "this file",
        help="write the path relative to the spec's folder, inside the project; an empty "
        "file is fine when there are no requests yet",
    )
    return None


def _requests(ctx: Ctx, dataset: ast.Dataset, text: str, shown: str) -> tuple[Request, ...]:
    ids_column = _id_column(dataset)
    columns = columns_of(dataset)
    seen: dict[str, Span] = {}
    out: list[Request] = []
    offset = 0
    for number, raw in enumerate(text.split("\n"), start=1):  # lines as editors count them
        line = raw.removesuffix("\r")
        span = Span(shown, number, 1, number, max(len(line), 1), offset, offset + len(line))
        start = offset
        offset += len(raw) + 1
        if not line.strip():
            continue
        fields = _fields(ctx, line, span)
        if fields is None:
            continue
        request = fields["request"]
        if request in seen:
            first = Label(seen[request], "first here", False)
            ctx.report(error("FM0382", f"request `{request}` is listed twice", span,
                             "again", help="give every request its own id",
                             related=(first,)))  # fmt: skip
            continue
        seen[request] = span
        if "ids" in fields and ids_column is None:
            ctx.report(_no_id_column(dataset, request, span))
            continue
        where = None
        if "where" in fields:
            where = _where(ctx, fields["where"], line, span, start, columns, request)
            if where is None:
                continue
        ids = tuple(str(v) for v in fields.get("ids", ()))
        out.append(Request(request, fields["by"], fields["at"], ids, where, span))
    return tuple(out)


def _id_column(dataset: ast.Dataset) -> str | None:
    for stmt in dataset.body:
        if isinstance(stmt, ast.Schema):
            for field in stmt.fields:
                if any(tag.name == "id" for tag in field.tags):
                    return field.name.name
    return None


def _fields(ctx: Ctx, line: str, span: Span) -> dict[str, Any] | None:
    """The request on one line, checked field by field; None after FM0382."""
    try:
        document = json.loads(line)
    except ValueError as exc:
        return _malformed(ctx, span, f"this line is not JSON ({exc})")
    if not isinstance(document, dict):
        return _malformed(ctx, span, "a request is a JSON object")
    for key in document:
        if key not in FIELDS:
            hint = did_you_mean(key, FIELDS)
            return _malformed(ctx, span, f"unknown field `{key}`" + (f"; {hint}" if hint else ""))
    for key in ("request", "by", "at"):
        value = document.get(key)
        if not isinstance(value, str) or not value.strip():
            return _malformed(ctx, span, f"`{key}` is missing or not a non-empty string")
    if not _is_time(document["at"]):
        return _malformed(ctx, span, f"`at` is `{document['at']}`, not an ISO 8601 date or time")
    if ("ids" in document) == ("where" in document):
        return _malformed(ctx, span, "a request has exactly one of `ids` or `where`")
    ids = document.get("ids", [0])
    if not isinstance(ids, list) or not ids or not all(_is_id(v) for v in ids):
        return _malformed(ctx, span, "`ids` is a non-empty list of strings or whole numbers")
    where = document.get("where", "x")
    if not isinstance(where, str) or not where.strip():
        return _malformed(ctx, span, "`where` is a non-empty string holding a condition")
    if "reason" in document and not isinstance(document["reason"], str):
        return _malformed(ctx, span, "`reason` is a string")
    return document


def _is_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_time(text: str) -> bool:
    try:
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _malformed(ctx: Ctx, span: Span, what: str) -> dict[str, Any] | None:
    """FM0382 at the line; None, for `_fields` to return."""
    ctx.error(
        "FM0382",
        f"not a forget request: {what}",
        span,
        "this line",
        help='write one JSON object per line: {"request": "ID", "by": "WHO", "at": '
        '"2026-12-01", "ids": ["ROW ID", …]} or the same with "where": "CONDITION"',
    )
    return None


def _no_id_column(dataset: ast.Dataset, request: str, span: Span) -> Diagnostic:
    return error(
        "FM0383",
        f"request `{request}` removes rows by id, and dataset `{dataset.name.name}` has no "
        "`@id` column",
        span,
        "ids, but no `@id` column",
        help="tag the column that identifies rows `@id` in the schema, or remove the rows by "
        'a condition: "where": "COLUMN == \\"VALUE\\""',
        related=(Label(dataset.name.span, "declared here", False),),
    )


def _where(ctx: Ctx, where: str, line: str, span: Span, start: int,
           columns: dict[str, str], request: str) -> ast.Expr | None:  # fmt: skip
    """The request's condition, parsed and type-checked; diagnostics at its line."""
    found = _WHERE_VALUE.search(line)
    column = found.end() + 1 if found else 1
    here = _RequestCtx(ctx.program, ctx.source, span.file, span.line, column, start)
    result = parse_whole(_PREFIX + where + _SUFFIX, span.file)  # not the editor's reparser
    condition = _condition(result.module)
    if result.diagnostics or condition is None:
        first = result.diagnostics[0].message if result.diagnostics else "more than a condition"
        first = first.replace("found `}`", "found the end of the condition")
        moved = here.moved(result.diagnostics[0]) if result.diagnostics else None
        at = moved.primary_span if moved is not None else None
        ctx.error(
            "FM0384",
            f"the `where` of request `{request}` is not a condition: {first}",
            at or span,
            "here",
            help="write a condition as `drop where` takes it, e.g. "
            '"AUTHOR == \\"Jo\\"" or "CONTENT contains \\"my address\\""',
        )
        return None
    before = _errors(ctx.program)
    ExprChecker(here, columns, f"forget request `{request}`").expect(
        condition, BOOL, "a forget request's `where`"
    )
    return condition if _errors(ctx.program) == before else None


def _errors(program: Program) -> int:
    return sum(d.severity is Severity.ERROR for d in program.sink.items)


def _condition(module: ast.Module | None) -> ast.Expr | None:
    """The condition of the wrapper's only rule; None when the text was more than that."""
    if module is None or len(module.items) != 1:
        return None
    dataset = module.items[0]
    if not isinstance(dataset, ast.Dataset) or len(dataset.body) != 1:
        return None
    clean = dataset.body[0]
    if not isinstance(clean, ast.Clean) or len(clean.rules) != 1:
        return None
    rule = clean.rules[0]
    return rule.condition if isinstance(rule, ast.FilterRows) else None
