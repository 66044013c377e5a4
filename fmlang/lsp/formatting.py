"""Formatting through `fmc fmt`: one edit that replaces the document with its canonical form."""

from __future__ import annotations

from lsprotocol import types

from fmlang.fmt import format_text
from fmlang.lsp.positions import LineIndex


def format_document(text: str, file: str, lines: LineIndex) -> list[types.TextEdit] | None:
    """The edits, `[]` when the text is already formatted, None when it does not parse."""
    result = format_text(text, file)
    if result.text is None:
        return None
    if not result.changed:
        return []
    return [types.TextEdit(range=lines.whole(), new_text=result.text)]
