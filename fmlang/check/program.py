"""The loaded program: every source file, its module, and what each file can see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmlang.diagnostics import DiagnosticSink, Span
from fmlang.syntax import ast

if TYPE_CHECKING:
    from fmlang.check.forget import ForgetFile

DECLARATION_KINDS = ("let", "dataset", "labels", "model", "merge", "base_model", "hardware")


@dataclass(frozen=True)
class Symbol:
    kind: str
    name: str
    node: ast.Let | ast.Dataset | ast.Labels | ast.Block
    file: str

    @property
    def span(self) -> Span:
        return self.node.name.span


@dataclass
class SourceFile:
    path: str  # as shown to the user
    text: str
    module: ast.Module
    stdlib: bool = False


@dataclass
class Program:
    """What the passes share. `scopes[file]` maps each visible name to its symbol."""

    roots: list[str]
    files: dict[str, SourceFile] = field(default_factory=dict)
    scopes: dict[str, dict[str, Symbol]] = field(default_factory=dict)
    # imported[file][name]: the span of the import statement that brought `name` into `file`
    imported: dict[str, dict[str, Span]] = field(default_factory=dict)
    sink: DiagnosticSink = field(default_factory=DiagnosticSink)
    # forget[(file, dataset)]: the dataset's forget requests as read (check/forget.py)
    forget: dict[tuple[str, str], ForgetFile] = field(default_factory=dict)

    @property
    def sources(self) -> dict[str, str]:
        return {path: f.text for path, f in self.files.items()}

    def user_files(self) -> list[SourceFile]:
        return [f for f in self.files.values() if not f.stdlib]

    def declarations(self, kind: str | None = None) -> list[tuple[SourceFile, Symbol]]:
        """Declarations in user files (not the stdlib), in file order."""
        out = []
        for source in self.user_files():
            for symbol in own_symbols(source):
                if kind is None or symbol.kind == kind:
                    out.append((source, symbol))
        return out

    def lookup(self, file: str, name: str) -> Symbol | None:
        return self.scopes.get(file, {}).get(name)


def own_symbols(source: SourceFile) -> list[Symbol]:
    symbols: list[Symbol] = []
    for item in source.module.items:
        if isinstance(item, ast.Let):
            symbols.append(Symbol("let", item.name.name, item, source.path))
        elif isinstance(item, ast.Dataset):
            symbols.append(Symbol("dataset", item.name.name, item, source.path))
        elif isinstance(item, ast.Labels):
            symbols.append(Symbol("labels", item.name.name, item, source.path))
        elif isinstance(item, ast.Block) and item.kind != "deploy":
            symbols.append(Symbol(item.kind, item.name.name, item, source.path))
    return symbols
