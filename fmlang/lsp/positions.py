"""Spans (1-based lines and columns, in characters) ↔ LSP positions (0-based, in the
negotiated code units: UTF-16 unless the client offers better)."""

from __future__ import annotations

from lsprotocol import types

from fmlang.diagnostics import Span

UTF16, UTF8 = types.PositionEncodingKind.Utf16, types.PositionEncodingKind.Utf8


class LineIndex:
    """The lines of one text, to convert columns between characters and code units."""

    def __init__(self, text: str, encoding: str = UTF16) -> None:
        self.lines = text.split("\n")
        self.encoding = encoding

    def units(self, prefix: str) -> int:
        if prefix.isascii() or self.encoding not in (UTF16, UTF8):
            return len(prefix)
        if self.encoding == UTF8:
            return len(prefix.encode("utf-8"))
        return len(prefix.encode("utf-16-le")) // 2

    def position(self, line: int, column: int) -> types.Position:
        """The LSP position of 1-based `line` and `column`."""
        row = max(line - 1, 0)
        text = self.lines[row] if row < len(self.lines) else ""
        return types.Position(row, self.units(text[: max(column - 1, 0)]))

    def range(self, span: Span) -> types.Range:
        return types.Range(
            self.position(span.line, span.column), self.position(span.end_line, span.end_column)
        )

    def line_column(self, position: types.Position) -> tuple[int, int]:
        """1-based line and column (in characters) of an LSP position."""
        row = position.line
        text = self.lines[row] if row < len(self.lines) else ""
        if text.isascii() or self.encoding not in (UTF16, UTF8):
            return row + 1, min(position.character, len(text)) + 1
        count = 0
        for index, char in enumerate(text):
            if count >= position.character:
                return row + 1, index + 1
            count += self.units(char)
        return row + 1, len(text) + 1

    def line_text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

    def whole(self) -> types.Range:
        """The range of the whole text (for a replace-everything edit)."""
        last = len(self.lines) - 1
        return types.Range(types.Position(0, 0), types.Position(last, self.units(self.lines[last])))


def contains(span: Span, line: int, column: int) -> bool:
    """Whether 1-based `line`/`column` lies in `span` (its end included: a cursor just
    after a name is still on it)."""
    if line < span.line or line > span.end_line:
        return False
    if line == span.line and column < span.column:
        return False
    return not (line == span.end_line and column > span.end_column)


def size(span: Span) -> tuple[int, int]:
    """Sort key: smaller spans first, so the innermost node at a position wins."""
    return (span.end_line - span.line, span.end_column - span.column)
