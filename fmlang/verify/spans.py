"""Where each setting was written: the verifier labels unsat cores with these spans."""

from __future__ import annotations

from fmlang.check.program import Program
from fmlang.check.settings import setting
from fmlang.diagnostics import Span
from fmlang.syntax import ast


class SpanIndex:
    """Looks up declarations and their settings by name in the user's files."""

    def __init__(self, program: Program) -> None:
        self.decls: dict[tuple[str, str], ast.Dataset | ast.Labels | ast.Block] = {}
        for source in program.files.values():
            for item in source.module.items:
                if isinstance(item, ast.Dataset):
                    self.decls.setdefault(("dataset", item.name.name), item)
                elif isinstance(item, ast.Labels):
                    self.decls.setdefault(("labels", item.name.name), item)
                elif isinstance(item, ast.Block):
                    self.decls.setdefault((item.kind, item.name.name), item)

    def decl(self, kind: str, name: str) -> Span | None:
        node = self.decls.get((kind, name))
        return node.name.span if node is not None else None

    def setting(self, kind: str, name: str, path: str) -> Span | None:
        """`path` is `adapter`, `train.data` or `kserve.replicas`; falls back to the
        enclosing setting, then to the declaration's name."""
        node = self.decls.get((kind, name))
        if node is None:
            return None
        body: tuple[object, ...] = tuple(node.body)
        found: Span | None = None
        for key in path.split("."):
            stmt = setting(body, key)
            if stmt is None:
                break
            found = stmt.span
            body = tuple(stmt.body) if isinstance(stmt, ast.BlockSetting) else ()
        return found or node.name.span

    def column(self, dataset: str, column: str) -> Span | None:
        node = self.decls.get(("dataset", dataset))
        if isinstance(node, ast.Dataset):
            for stmt in node.body:
                if isinstance(stmt, ast.Schema):
                    for field in stmt.fields:
                        if field.name.name == column:
                            return field.span
        return self.decl("dataset", dataset)

    def grants(self, kind: str, name: str) -> list[ast.Grant]:
        node = self.decls.get((kind, name))
        return [s for s in node.body if isinstance(s, ast.Grant)] if node is not None else []
