"""What completion can offer: the stdlib's entries, the names a document sees, the columns,
splits and classes of its datasets and labels, and completion items built from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from lsprotocol import types

from fmlang.check.program import SourceFile, Symbol, own_symbols
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.index import class_targets, fields_of, split_targets
from fmlang.lsp.positions import LineIndex
from fmlang.paths import stdlib_dir
from fmlang.syntax import ast
from fmlang.syntax.parser import parse_whole

CK = types.CompletionItemKind
KIND_ICONS = {
    "dataset": CK.Struct, "labels": CK.Enum, "model": CK.Class, "merge": CK.Class,
    "base_model": CK.Module, "hardware": CK.Module, "let": CK.Constant,
}  # fmt: skip
_IMPORT_LINE = re.compile(r"^import\b", re.MULTILINE)


@dataclass(frozen=True)
class StdEntry:
    module: str  # `models`
    name: str
    kind: str
    summary: str  # the first line of its doc comment

    @property
    def dotted(self) -> str:
        return f"std.{self.module}.{self.name}"


@cache
def stdlib_entries() -> tuple[StdEntry, ...]:
    entries = []
    for path in sorted(stdlib_dir().glob("*.fm")):
        text = path.read_text(encoding="utf-8")
        module = parse_whole(text, path.name).module or ast.Module(())
        for symbol in own_symbols(SourceFile(path.name, text, module, True)):
            entries.append(StdEntry(path.stem, symbol.name, symbol.kind, _summary(text, symbol)))
    return tuple(entries)


def _summary(text: str, symbol: Symbol) -> str:
    lines = text.split("\n")
    row = symbol.span.line - 2
    while row > 0 and lines[row - 1].startswith("#"):
        row -= 1
    line = lines[row] if 0 <= row < len(lines) else ""
    return line.lstrip("#").strip() if line.startswith("#") else ""


class Names:
    """The names the document saw the last time it parsed."""

    def __init__(self, parsed: Snapshot | None) -> None:
        self.parsed = parsed
        program = parsed.result.program if parsed else None
        self.scope: dict[str, Symbol] = (
            program.scopes.get(parsed.file, {}) if parsed and program else {}
        )

    def of_kind(self, *kinds: str) -> list[Symbol]:
        return [symbol for symbol in self.scope.values() if symbol.kind in kinds]

    def node(self, name: str, kind: type) -> object | None:
        symbol = self.scope.get(name)
        return symbol.node if symbol is not None and isinstance(symbol.node, kind) else None

    def dataset(self, name: str) -> ast.Dataset | None:
        node = self.node(name, ast.Dataset)
        return node if isinstance(node, ast.Dataset) else None

    def columns(self, dataset: str) -> list[str]:
        found = self.dataset(dataset)
        return list(fields_of(found)) if found is not None else []

    def splits(self, dataset: str) -> list[str]:
        found = self.dataset(dataset)
        return list(split_targets(found)) if found is not None else []

    def classes(self, labels: str) -> list[str]:
        node = self.node(labels, ast.Labels)
        return list(class_targets(node)) if isinstance(node, ast.Labels) else []

    def labels_dataset(self, labels: str) -> str:
        node = self.node(labels, ast.Labels)
        return node.source[0].name if isinstance(node, ast.Labels) else ""


class Items:
    """Builds completion items that replace the word before the cursor."""

    def __init__(self, text: str, lines: LineIndex, line: int, column: int, word: str) -> None:
        self.text, self.lines = text, lines
        self.range = types.Range(
            lines.position(line, column - len(word)), lines.position(line, column)
        )
        self.out: list[types.CompletionItem] = []

    def add(
        self,
        label: str,
        kind: types.CompletionItemKind,
        detail: str | None = None,
        insert: str | None = None,
        snippet: bool = False,
        extra: list[types.TextEdit] | None = None,
    ) -> None:
        self.out.append(
            types.CompletionItem(
                label=label,
                kind=kind,
                detail=detail,
                text_edit=types.TextEdit(range=self.range, new_text=insert or label),
                insert_text_format=types.InsertTextFormat.Snippet if snippet else None,
                additional_text_edits=extra,
                sort_text=f"{len(self.out):04d}",
            )
        )

    def symbols(self, symbols: list[Symbol]) -> None:
        for symbol in symbols:
            where = " (stdlib)" if symbol.file.startswith("<std>") else ""
            self.add(
                symbol.name, KIND_ICONS.get(symbol.kind, CK.Reference), f"{symbol.kind}{where}"
            )

    def stdlib(self, kind: str, seen: set[str]) -> None:
        """Stdlib entries of `kind` the document does not import yet, with the import."""
        for entry in stdlib_entries():
            if entry.kind == kind and entry.name not in seen:
                edit = self.import_edit(entry.dotted)
                detail = f"{entry.kind} from std.{entry.module} (adds the import) {entry.summary}"
                self.add(entry.name, KIND_ICONS.get(kind, CK.Module), detail.strip(), extra=[edit])

    def import_edit(self, dotted: str) -> types.TextEdit:
        last = list(_IMPORT_LINE.finditer(self.text))
        row = self.text.count("\n", 0, last[-1].start()) + 1 if last else 0
        spot = types.Position(row, 0)
        return types.TextEdit(range=types.Range(spot, spot), new_text=f"import {dotted}\n")

    def words(
        self,
        words: list[str] | tuple[str, ...],
        kind: types.CompletionItemKind,
        detail: str | None = None,
    ) -> None:
        for word in words:
            self.add(word, kind, detail)
