"""Reparse only the top-level items an edit touched: what keeps the language server fast.

A spec is a sequence of top-level items, and a top-level item starts at the beginning of a
line with one of the top-level keywords. `ParseCache.parse` cuts the text into such chunks,
parses each new chunk on its own and reuses the parse of every chunk it has seen before,
moved to where the chunk now starts. The result is the one `parse_whole` gives, spans,
comments and diagnostics included (the grammar is LALR, so items parsed apart are the items
parsed together):

- when every chunk parses, the module is their items in order;
- from the first chunk that does not parse on its own (an unclosed `{`, or a keyword at the
  start of a line inside a block), the rest of the text is parsed in one piece, exactly as
  the whole-text parse would have continued, and its error is the whole-text parse's error.

    >>> cache = ParseCache()
    >>> with reusing_parses(cache):
    ...     result = check_text(text, file)   # every parse under it goes through the cache
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from lark import Token
from lark.exceptions import LarkError, VisitError

from fmlang.diagnostics import Span
from fmlang.syntax import ast
from fmlang.syntax.errors import syntax_diagnostic
from fmlang.syntax.parser import (
    MAX_SOURCE_BYTES,
    REPARSER,
    ParseResult,
    _parse_module,
    _token_span,
    parse_whole,
)

TOP_LEVEL = (
    "import", "let", "dataset", "labels", "model", "merge", "constraints", "deploy",
    "base_model", "hardware",
)  # fmt: skip
_ITEM_START = re.compile(rf"^(?:{'|'.join(TOP_LEVEL)})\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A run of whole lines from one item start to the next (the first may hold none)."""

    text: str
    line: int  # 1-based line of its first character
    offset: int  # 0-based offset of its first character


@dataclass(frozen=True, slots=True)
class Piece:
    """A chunk's parse, with spans placed as if the chunk started at `line`/`offset`."""

    items: tuple[ast.Item, ...]
    comments: tuple[ast.Comment, ...]
    line: int
    offset: int


def chunks(text: str) -> Iterator[Chunk]:
    """Cut `text` at every line that starts with a top-level keyword."""
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    line = 1
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        yield Chunk(text[start:end], line, start)
        line += text.count("\n", start, end)


class ParseCache:
    """Parses of top-level chunks by their text, per file, reused across edits."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, Piece]] = {}

    def parse(self, text: str, file: str) -> ParseResult:
        if len(text) > MAX_SOURCE_BYTES:
            return parse_whole(text, file)
        known = self._files.get(file, {})
        kept: dict[str, Piece] = {}
        items: list[ast.Item] = []
        comments: list[ast.Comment] = []
        pending = list(chunks(text))
        for index, chunk in enumerate(pending):
            piece = self._piece(known, chunk, file)
            if piece is None:
                later = (c.text for c in pending[index + 1 :])
                kept.update({t: known[t] for t in later if t in known})
                self._files[file] = kept
                return _parse_rest(text, file, chunk, items, comments)
            kept[chunk.text] = piece
            items.extend(piece.items)
            comments.extend(piece.comments)
        self._files[file] = kept
        return ParseResult(_module(items, comments, file), ())

    def forget(self, file: str) -> None:
        self._files.pop(file, None)

    def _piece(self, known: dict[str, Piece], chunk: Chunk, file: str) -> Piece | None:
        piece = known.get(chunk.text)
        if piece is not None:
            return moved(piece, chunk.line, chunk.offset)
        return _parse_chunk(chunk, file)


@contextmanager
def reusing_parses(cache: ParseCache) -> Iterator[ParseCache]:
    """Every `fmlang.syntax.parser.parse` in this context (and thread) goes through `cache`."""
    token = REPARSER.set(cache)
    try:
        yield cache
    finally:
        REPARSER.reset(token)


def _padded(text: str, line: int, offset: int) -> str:
    """`text` preceded by blanks, so that it starts at `line` and `offset` (column 1)."""
    newlines = line - 1
    return " " * (offset - newlines) + "\n" * newlines + text


def _parse_chunk(chunk: Chunk, file: str) -> Piece | None:
    tokens: list[Token] = []
    try:
        module = _parse_module(_padded(chunk.text, chunk.line, chunk.offset), file, tokens)
    except (LarkError, RecursionError, VisitError):
        return None
    found = tuple(ast.Comment(str(t), _token_span(t, file)) for t in tokens)
    return Piece(module.items, found, chunk.line, chunk.offset)


def _parse_rest(
    text: str, file: str, start: Chunk, items: list[ast.Item], comments: list[ast.Comment]
) -> ParseResult:
    """The whole-text parse from `start` on: the items before it parsed, so its state there
    is the start state. Errors are described against the real text, as `parse_whole` does."""
    tokens: list[Token] = []
    try:
        module = _parse_module(
            _padded(text[start.offset :], start.line, start.offset), file, tokens
        )
    except LarkError as exc:
        return ParseResult(None, (syntax_diagnostic(exc, text, file),))
    except (RecursionError, VisitError):
        return parse_whole(text, file)
    items.extend(module.items)
    comments.extend(ast.Comment(str(t), _token_span(t, file)) for t in tokens)
    return ParseResult(_module(items, comments, file), ())


def _module(items: list[ast.Item], comments: list[ast.Comment], file: str) -> ast.Module:
    """The module `parse_whole` builds: its span runs from the first item to the last."""
    if not items:
        return ast.Module((), tuple(comments), Span(file, 1, 1, 1, 1))
    first, last = items[0].span, items[-1].span
    span = Span(
        file, first.line, first.column, last.end_line, last.end_column, first.start, last.end
    )
    return ast.Module(tuple(items), tuple(comments), span)


# ---- moving a parse to where its chunk now starts ----------------------------------------


def moved(piece: Piece, line: int, offset: int) -> Piece:
    lines, chars = line - piece.line, offset - piece.offset
    if not lines and not chars:
        return piece
    mover = _Mover(lines, chars)
    items = tuple(mover.node(item) for item in piece.items)
    comments = tuple(mover.node(comment) for comment in piece.comments)
    return Piece(items, comments, line, offset)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


class _Mover:
    """Rebuilds AST nodes with every span shifted by whole lines and characters (chunks
    start at column 1, so columns never change). A span shared by two nodes (a positional
    argument and its value) is shifted once and stays shared."""

    def __init__(self, lines: int, chars: int) -> None:
        self.lines, self.chars = lines, chars
        self.spans: dict[int, Span] = {}

    def node(self, node: Any) -> Any:
        cls = type(node)
        if cls is Span:
            return self.span(node)
        if cls is tuple:
            return tuple([self.node(item) for item in node])
        if cls is str or node is None or cls is bool:
            return node
        return cls(*[self.node(getattr(node, name)) for name in _field_names(cls)])

    def span(self, span: Span) -> Span:
        moved = self.spans.get(id(span))
        if moved is None:
            lines, chars = self.lines, self.chars
            moved = self.spans[id(span)] = Span(
                span.file,
                span.line + lines,
                span.column,
                span.end_line + lines,
                span.end_column,
                span.start + chars,
                span.end + chars,
            )
        return moved
