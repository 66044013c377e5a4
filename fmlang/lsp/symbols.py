"""Document symbols: the outline of a spec, each declaration with what it holds."""

from __future__ import annotations

from lsprotocol import types

from fmlang.diagnostics import Span
from fmlang.fmt import format_expr
from fmlang.lsp.documents import Snapshot
from fmlang.syntax import ast

K = types.SymbolKind
ITEM_KINDS = {
    "dataset": K.Struct, "labels": K.Enum, "model": K.Class, "merge": K.Class,
    "deploy": K.Event, "base_model": K.Object, "hardware": K.Object,
}  # fmt: skip


def document_symbols(snapshot: Snapshot) -> list[types.DocumentSymbol]:
    module = snapshot.module
    if module is None:
        return []
    return [symbol for item in module.items if (symbol := _item(snapshot, item)) is not None]


def _symbol(
    snapshot: Snapshot,
    name: str,
    kind: types.SymbolKind,
    span: Span,
    selection: Span,
    detail: str = "",
    children: list[types.DocumentSymbol] | None = None,
) -> types.DocumentSymbol:
    lines = snapshot.lines()
    return types.DocumentSymbol(
        name=name or "?",
        kind=kind,
        range=lines.range(span),
        selection_range=lines.range(selection),
        detail=detail or None,
        children=children or None,
    )


def _item(snapshot: Snapshot, item: ast.Item) -> types.DocumentSymbol | None:
    if isinstance(item, ast.ImportModule):
        names = f".{{{', '.join(n.name for n in item.names)}}}" if item.names else ""
        return _symbol(snapshot, f"import {item.dotted}{names}", K.Module, item.span, item.span)
    if isinstance(item, ast.ImportFile):
        return _symbol(snapshot, f'import "{item.path}"', K.File, item.span, item.span)
    if isinstance(item, ast.Let):
        detail = format_expr(item.value)
        return _symbol(snapshot, item.name.name, K.Constant, item.span, item.name.span, detail)
    if isinstance(item, ast.Dataset):
        return _symbol(snapshot, item.name.name, K.Struct, item.span, item.name.span, "dataset",
                       _dataset_children(snapshot, item))  # fmt: skip
    if isinstance(item, ast.Labels):
        on = ".".join(p.name for p in item.source)
        return _symbol(snapshot, item.name.name, K.Enum, item.span, item.name.span,
                       f"labels on {on}", _labels_children(snapshot, item))  # fmt: skip
    if isinstance(item, ast.Block):
        return _symbol(snapshot, item.name.name, ITEM_KINDS[item.kind], item.span, item.name.span,
                       item.kind, _settings(snapshot, item.body))  # fmt: skip
    return _constraints(snapshot, item)


def _constraints(snapshot: Snapshot, item: ast.Constraints) -> types.DocumentSymbol:
    children = [
        _symbol(snapshot, format_expr(c.expr), K.Property, c.span, c.expr.span) for c in item.items
    ]
    name = f"constraints {item.target.name}"
    return _symbol(snapshot, name, K.Interface, item.span, item.target.span, "", children)


def _dataset_children(snapshot: Snapshot, dataset: ast.Dataset) -> list[types.DocumentSymbol]:
    out: list[types.DocumentSymbol] = []
    for stmt in dataset.body:
        if isinstance(stmt, ast.Schema):
            out.extend(
                _symbol(snapshot, f.name.name, K.Field, f.span, f.name.span, f.type.name.name)
                for f in stmt.fields
            )
        elif isinstance(stmt, ast.Split):
            out.extend(
                _symbol(snapshot, p.name.name, K.Property, p.span, p.name.span, "split")
                for p in stmt.parts
            )
    return out


def _labels_children(snapshot: Snapshot, labels: ast.Labels) -> list[types.DocumentSymbol]:
    return [
        _symbol(
            snapshot,
            stmt.name.name,
            K.Function,
            stmt.span,
            stmt.name.span,
            f"-> {stmt.target.name}" if stmt.target else "",
        )
        for stmt in labels.body
        if isinstance(stmt, ast.LabelingFunction)
    ]


def _settings(snapshot: Snapshot, body: tuple[object, ...]) -> list[types.DocumentSymbol]:
    out: list[types.DocumentSymbol] = []
    for stmt in body:
        if isinstance(stmt, ast.BlockSetting):
            out.append(_symbol(snapshot, stmt.key.name, K.Namespace, stmt.span, stmt.key.span,
                               "", _settings(snapshot, stmt.body)))  # fmt: skip
        elif isinstance(stmt, ast.Setting):
            detail = format_expr(stmt.value)
            out.append(
                _symbol(snapshot, stmt.key.name, K.Property, stmt.span, stmt.key.span, detail)
            )
    return out
