"""Go to definition and find references, for every name the index resolves: datasets,
labels, models, merges, base models and hardware profiles (into the stdlib too), constants,
imports, columns, splits and classes."""

from __future__ import annotations

from lsprotocol import types

from fmlang.diagnostics import Span
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.index import Mark, Target, at, marks_of

NAMED = ("decl", "ref")


def target_at(snapshot: Snapshot, position: types.Position) -> Target | None:
    line, column = snapshot.lines().line_column(position)
    mark = at(marks_of(snapshot), line, column, NAMED)
    return mark.target if mark is not None else None


def definition(snapshot: Snapshot, position: types.Position) -> list[types.Location]:
    target = target_at(snapshot, position)
    if target is None:
        return []
    return [location(snapshot, target.span)]


def references(
    snapshot: Snapshot, position: types.Position, include_declaration: bool
) -> list[types.Location]:
    """Every mention of the target in this document (and its declaration, wherever it is)."""
    target = target_at(snapshot, position)
    if target is None:
        return []
    found = [
        m for m in marks_of(snapshot) if m.target == target and _wanted(m, include_declaration)
    ]
    locations = [location(snapshot, m.span) for m in found]
    declared_here = any(m.role == "decl" for m in found)
    if include_declaration and not declared_here and target.kind not in ("module", "file"):
        locations.insert(0, location(snapshot, target.span))
    return locations


def _wanted(mark: Mark, include_declaration: bool) -> bool:
    return mark.role == "ref" or (include_declaration and mark.role == "decl")


def location(snapshot: Snapshot, span: Span) -> types.Location:
    return types.Location(snapshot.uri_of(span.file), snapshot.lines(span.file).range(span))
