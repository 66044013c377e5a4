"""Semantic tokens: what each name is (a dataset, a column, a class, a setting, ...), on
top of the TextMate grammar's lexical colours."""

from __future__ import annotations

from lsprotocol import types

from fmlang.lsp.documents import Snapshot
from fmlang.lsp.index import Mark, marks_of

TOKEN_TYPES = (
    "namespace", "class", "struct", "enum", "type", "variable", "property", "enumMember",
    "function", "decorator",
)  # fmt: skip
TOKEN_MODIFIERS = ("declaration", "readonly", "defaultLibrary")
LEGEND = types.SemanticTokensLegend(
    token_types=list(TOKEN_TYPES), token_modifiers=list(TOKEN_MODIFIERS)
)

BY_TARGET = {
    "module": "namespace", "file": "namespace", "model": "class", "merge": "class",
    "dataset": "struct", "labels": "enum", "base_model": "type", "hardware": "type",
    "let": "variable", "column": "variable", "split": "property", "class": "enumMember",
    "lf": "function",
}  # fmt: skip
BY_ROLE = {"key": "property", "function": "function", "type": "type", "tag": "decorator"}


def semantic_tokens(snapshot: Snapshot) -> types.SemanticTokens:
    data: list[int] = []
    previous_line, previous_start, previous_end = 0, 0, 0
    lines = snapshot.lines()
    for mark, kind, modifiers in _classified(marks_of(snapshot)):
        span = mark.span
        start = lines.position(span.line, span.column)
        end = lines.position(span.end_line, span.end_column)
        if start.line != end.line or end.character <= start.character:
            continue
        if start.line == previous_line and start.character < previous_end:
            continue  # overlaps the token before
        delta_line = start.line - previous_line
        delta_start = start.character - (previous_start if delta_line == 0 else 0)
        data += [delta_line, delta_start, end.character - start.character, kind, modifiers]
        previous_line, previous_start, previous_end = start.line, start.character, end.character
    return types.SemanticTokens(data=data)


def _classified(marks: list[Mark]) -> list[tuple[Mark, int, int]]:
    out = []
    for mark in sorted(marks, key=lambda m: (m.span.line, m.span.column, -m.span.end_column)):
        name = BY_TARGET.get(mark.target.kind) if mark.target else BY_ROLE.get(mark.role)
        if name is not None:
            out.append((mark, TOKEN_TYPES.index(name), _modifiers(mark)))
    return out


def _modifiers(mark: Mark) -> int:
    bits = 0
    if mark.role == "decl":
        bits |= 1 << TOKEN_MODIFIERS.index("declaration")
    target = mark.target
    if target is not None and target.kind == "let":
        bits |= 1 << TOKEN_MODIFIERS.index("readonly")
    if (target is not None and target.span.file.startswith("<std>")) or mark.role in (
        "function",
        "type",
    ):
        bits |= 1 << TOKEN_MODIFIERS.index("defaultLibrary")
    return bits
