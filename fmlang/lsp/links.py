"""Document links: every import opens the file it imports (`import "shared.fm"`, and the
stdlib module of `import std.models.minilm_l6`)."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pygls.uris import to_fs_path

from fmlang.lsp.documents import Snapshot, file_uri
from fmlang.lsp.index import marks_of
from fmlang.lsp.positions import LineIndex

IMPORTED = ("module", "file")


def document_links(snapshot: Snapshot) -> list[types.DocumentLink]:
    links = []
    lines = snapshot.lines()
    for mark in marks_of(snapshot):
        target = mark.target
        if mark.role != "ref" or target is None or target.kind not in IMPORTED:
            continue
        uri = file_uri(target.span.file)
        path = to_fs_path(uri)
        if path is None or not Path(path).is_file():
            continue  # a missing file: its diagnostic says so
        where = lines.range(mark.span)
        if target.kind == "file":
            where = _quoted(lines, mark.span.line, mark.span.column) or where
        links.append(types.DocumentLink(range=where, target=uri, tooltip=f"open {target.name}"))
    return links


def _quoted(lines: LineIndex, line: int, column: int) -> types.Range | None:
    """The range of the quoted path inside `import "file.fm"` (on the import's first line)."""
    text = lines.line_text(line)
    first = text.find('"', column - 1)
    last = text.find('"', first + 1) if first >= 0 else -1
    if first < 0 or last < 0:
        return None
    return types.Range(lines.position(line, first + 1), lines.position(line, last + 2))
