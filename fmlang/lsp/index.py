"""Every name in a document and what it means: the occurrences behind go-to-definition,
find-references, hover and semantic tokens.

`build_index` walks the document's AST with the checker's scopes and the settings table
(`fmlang.check.schema`), marking declarations and references to datasets, labels, models,
merges, base models, hardware profiles, constants, imports, columns, splits and classes,
and also setting keys, functions, column types and tags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fmlang.check import schema as s
from fmlang.check.expressions import FUNCTIONS
from fmlang.check.loader import display_path, resolved
from fmlang.check.program import Program, Symbol
from fmlang.diagnostics import Span
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.positions import contains, size
from fmlang.paths import stdlib_dir
from fmlang.syntax import ast

Resolver = Callable[[str], "Target | None"]


@dataclass(frozen=True)
class Target:
    """Something declared: `kind` is a declaration kind (`dataset`, `model`, ...) or
    `column`, `split`, `class`, `lf`, `module`, `file`."""

    kind: str
    name: str
    span: Span  # its name where it is declared (any file)
    node: object = field(default=None, compare=False)
    owner: str = ""  # the dataset of a column or split, the labels of a class


@dataclass(frozen=True)
class Mark:
    """One region of the document. `role` is `decl` or `ref` (with `target`), `key` (with
    `setting`), `function`, `type`, `tag`, or `constraint` and `quantity` (with `node`)."""

    span: Span
    role: str
    target: Target | None = None
    setting: s.Kind | None = None
    node: object = None


def symbol_target(symbol: Symbol) -> Target:
    return Target(symbol.kind, symbol.name, symbol.span, symbol.node)


def at(marks: list[Mark], line: int, column: int, roles: tuple[str, ...] = ()) -> Mark | None:
    """The innermost mark at 1-based `line`/`column` (of the given roles)."""
    found = [m for m in marks if contains(m.span, line, column) and (not roles or m.role in roles)]
    return min(found, key=lambda m: size(m.span)) if found else None


def marks_of(snapshot: Snapshot) -> list[Mark]:
    """The document's marks, built once per snapshot (none when it does not parse)."""
    marks: list[Mark] | None = snapshot.memo.get("marks")
    if marks is None:
        parsed = snapshot.module is not None
        program = snapshot.result.program
        marks = build_index(program, snapshot.file, snapshot.base) if parsed else []
        snapshot.memo["marks"] = marks
    return marks


def build_index(program: Program, file: str, base: Path) -> list[Mark]:
    source = program.files.get(file)
    if source is None:
        return []
    indexer = _Indexer(program, file, base)
    for item in source.module.items:
        indexer.item(item)
    return indexer.marks


def fields_of(dataset: ast.Dataset) -> dict[str, ast.Field]:
    return {
        f.name.name: f for stmt in dataset.body if isinstance(stmt, ast.Schema) for f in stmt.fields
    }


def column_targets(dataset: ast.Dataset) -> dict[str, Target]:
    owner = dataset.name.name
    return {
        name: Target("column", name, f.name.span, f, owner)
        for name, f in fields_of(dataset).items()
    }


def split_targets(dataset: ast.Dataset) -> dict[str, Target]:
    owner = dataset.name.name
    return {
        p.name.name: Target("split", p.name.name, p.name.span, p, owner)
        for stmt in dataset.body
        if isinstance(stmt, ast.Split)
        for p in stmt.parts
    }


def class_targets(labels: ast.Labels) -> dict[str, Target]:
    for stmt in labels.body:
        if isinstance(stmt, ast.Setting) and stmt.key.name == "classes":
            items = stmt.value.items if isinstance(stmt.value, ast.ListExpr) else (stmt.value,)
            names = [i for i in items if isinstance(i, ast.Name)]
            owner = labels.name.name
            return {n.id: Target("class", n.id, n.span, stmt, owner) for n in names}
    return {}


def walk_expr(expr: ast.Expr) -> Iterator[ast.Expr]:
    """The expression and every expression inside it, outermost first."""
    yield expr
    children: tuple[ast.Expr | None, ...] = ()
    if isinstance(expr, ast.Attribute):
        children = (expr.value,)
    elif isinstance(expr, ast.Call):
        children = (expr.func, *(a.value for a in expr.args))
    elif isinstance(expr, ast.Binary):
        children = (expr.left, expr.right)
    elif isinstance(expr, ast.Unary):
        children = (expr.operand,)
    elif isinstance(expr, ast.Range):
        children = (expr.low, expr.high)
    elif isinstance(expr, ast.ListExpr):
        children = expr.items
    elif isinstance(expr, ast.Auto):
        children = (expr.domain,)
    for child in children:
        if child is not None:
            yield from walk_expr(child)


class _Indexer:
    def __init__(self, program: Program, file: str, base: Path) -> None:
        self.program, self.file, self.base = program, file, base
        self.marks: list[Mark] = []

    # ---- helpers -----------------------------------------------------------------

    def mark(self, span: Span, role: str, target: Target | None = None, **extra: object) -> None:
        self.marks.append(Mark(span, role, target, **extra))  # type: ignore[arg-type]

    def declare(self, ident: ast.Ident, target: Target) -> None:
        self.mark(ident.span, "decl", target)

    def symbol(self, name: str) -> Target | None:
        found = self.program.lookup(self.file, name)
        return symbol_target(found) if found is not None else None

    def refer(self, span: Span, target: Target | None) -> None:
        if target is not None:
            self.mark(span, "ref", target)

    def node_of(self, name: str, kind: type) -> object | None:
        found = self.program.lookup(self.file, name)
        return found.node if found is not None and isinstance(found.node, kind) else None

    # ---- items -------------------------------------------------------------------

    def item(self, item: ast.Item) -> None:
        if isinstance(item, ast.ImportModule):
            self.import_module(item)
        elif isinstance(item, ast.ImportFile):
            self.import_file(item)
        elif isinstance(item, ast.Let):
            self.declare(item.name, Target("let", item.name.name, item.name.span, item))
        elif isinstance(item, ast.Dataset):
            self.dataset(item)
        elif isinstance(item, ast.Labels):
            self.labels(item)
        elif isinstance(item, ast.Block):
            self.block(item)
        elif isinstance(item, ast.Constraints):
            self.constraints(item)

    def import_module(self, item: ast.ImportModule) -> None:
        parts = [p.name for p in item.path]
        for cut in range(len(parts), 1, -1):
            path = stdlib_dir().joinpath(*parts[1:cut]).with_suffix(".fm")
            if path.is_file():
                module = Target(
                    "module", ".".join(parts[:cut]), _file_start(_std_name(parts[1:cut]))
                )
                self.mark(_join(item.path[0].span, item.path[cut - 1].span), "ref", module)
                break
        named = item.names if item.names is not None else item.path[-1:]
        for ident in named:
            found = self.program.lookup(self.file, ident.name)
            if found is not None and found.file != self.file:
                self.refer(ident.span, symbol_target(found))

    def import_file(self, item: ast.ImportFile) -> None:
        key = display_path(resolved(self.base / item.path))
        self.refer(item.span, Target("file", item.path, _file_start(key)))

    def dataset(self, dataset: ast.Dataset) -> None:
        self.declare(dataset.name, Target("dataset", dataset.name.name, dataset.name.span, dataset))
        columns = column_targets(dataset)
        for target in split_targets(dataset).values():
            self.mark(target.span, "decl", target)
        resolve = self.columns_then_lets(columns)
        for stmt in dataset.body:
            self.dataset_stmt(stmt, columns, resolve)

    def dataset_stmt(
        self, stmt: ast.DatasetStmt, columns: dict[str, Target], resolve: Resolver
    ) -> None:
        if isinstance(stmt, ast.Schema):
            for f in stmt.fields:
                self.column(f, columns, resolve)
        elif isinstance(stmt, ast.Clean):
            for rule in stmt.rules:
                self.clean_rule(rule, columns, resolve)
        elif isinstance(stmt, ast.Split) and stmt.by is not None:
            self.expression(stmt.by, resolve)
        elif isinstance(stmt, ast.Setting | ast.BlockSetting):
            self.setting(stmt, s.DATASET)

    def column(self, f: ast.Field, columns: dict[str, Target], resolve: Resolver) -> None:
        self.declare(f.name, columns[f.name.name])
        self.mark(f.type.name.span, "type")
        for tag in f.tags:
            self.mark(tag.span, "tag")
        if f.default is not None:
            self.expression(f.default, resolve)

    def clean_rule(
        self, rule: ast.CleanRule, columns: dict[str, Target], resolve: Resolver
    ) -> None:
        if isinstance(rule, ast.FilterRows):
            self.expression(rule.condition, resolve)
            return
        for column in rule.columns:
            self.refer(column.span, columns.get(column.name))

    def columns_then_lets(self, columns: dict[str, Target]) -> Resolver:
        def resolve(name: str) -> Target | None:
            if name in columns:
                return columns[name]
            found = self.symbol(name)
            return found if found is not None and found.kind == "let" else None

        return resolve

    def labels(self, labels: ast.Labels) -> None:
        self.declare(labels.name, Target("labels", labels.name.name, labels.name.span, labels))
        dataset = self.source_of(labels)
        columns = column_targets(dataset) if dataset is not None else {}
        classes = class_targets(labels)
        for target in classes.values():
            self.mark(target.span, "decl", target)
        resolve = self.columns_then_lets(columns)
        for stmt in labels.body:
            if isinstance(stmt, ast.LabelingFunction):
                self.declare(
                    stmt.name, Target("lf", stmt.name.name, stmt.name.span, stmt, labels.name.name)
                )
                self.expression(stmt.expr, resolve)
                if stmt.target is not None:
                    self.refer(stmt.target.span, classes.get(stmt.target.name))
            elif isinstance(stmt, ast.Setting | ast.BlockSetting) and stmt.key.name != "classes":
                self.setting(stmt, s.LABELS)
            elif isinstance(stmt, ast.Setting):
                self.mark(stmt.key.span, "key", setting=s.LABELS["classes"])

    def source_of(self, labels: ast.Labels) -> ast.Dataset | None:
        head = labels.source[0]
        target = self.symbol(head.name)
        self.refer(head.span, target)
        dataset = (
            target.node if target is not None and isinstance(target.node, ast.Dataset) else None
        )
        if dataset is not None and len(labels.source) > 1:
            split = labels.source[1]
            self.refer(split.span, split_targets(dataset).get(split.name))
        return dataset

    def block(self, block: ast.Block) -> None:
        if block.kind == "deploy":
            self.refer(block.name.span, self.symbol(block.name.name))
        else:
            self.declare(block.name, Target(block.kind, block.name.name, block.name.span, block))
        table = s.BLOCKS.get(block.kind, {})
        columns = self.training_columns(block) if block.kind == "model" else {}
        for stmt in block.body:
            if isinstance(stmt, ast.Setting | ast.BlockSetting):
                self.setting(stmt, table, columns)

    def training_columns(self, model: ast.Block) -> dict[str, Target]:
        for stmt in model.body:
            if isinstance(stmt, ast.BlockSetting) and stmt.key.name == "train":
                for inner in stmt.body:
                    if isinstance(inner, ast.Setting) and inner.key.name == "data":
                        dataset = self.dataset_behind(inner.value)
                        return column_targets(dataset) if dataset is not None else {}
        return {}

    def dataset_behind(self, value: ast.Expr) -> ast.Dataset | None:
        head = value
        while isinstance(head, ast.Attribute):
            head = head.value
        if not isinstance(head, ast.Name):
            return None
        found = self.program.lookup(self.file, head.id)
        if found is not None and isinstance(found.node, ast.Labels):
            found = self.program.lookup(found.file, found.node.source[0].name)
        return found.node if found is not None and isinstance(found.node, ast.Dataset) else None

    # ---- settings and expressions ----------------------------------------------------

    def setting(
        self,
        stmt: ast.Setting | ast.BlockSetting,
        table: dict[str, s.Kind],
        columns: dict[str, Target] | None = None,
    ) -> None:
        kind = table.get(stmt.key.name)
        self.mark(stmt.key.span, "key", setting=kind)
        if isinstance(stmt, ast.BlockSetting):
            inner = kind.settings if isinstance(kind, s.Block) else {}
            for child in stmt.body:
                self.setting(child, inner, columns)
        elif isinstance(kind, s.Column) and columns is not None:
            self.expression(stmt.value, lambda name: columns.get(name))
        else:
            self.value(stmt.value, kind)
        if isinstance(stmt, ast.Setting) and stmt.on is not None:  # `select by m on data.split`
            self.expression(stmt.on, self.declared)

    def value(self, value: ast.Expr, kind: s.Kind | None) -> None:
        if (
            isinstance(value, ast.Call)
            and isinstance(kind, s.Call)
            and isinstance(value.func, ast.Name)
        ):
            keywords = kind.heads.get(value.func.id, {})
            for arg in value.args:
                if arg.name is not None:
                    self.mark(arg.name.span, "key", setting=keywords.get(arg.name.name))
                self.expression(arg.value, self.declared)
            return
        self.expression(value, self.declared)

    def declared(self, name: str) -> Target | None:
        return self.symbol(name)

    def expression(self, expr: ast.Expr, resolve: Resolver) -> None:
        calls = {id(e.func) for e in walk_expr(expr) if isinstance(e, ast.Call)}
        for node in walk_expr(expr):
            if isinstance(node, ast.Name) and id(node) in calls:
                if node.id in FUNCTIONS:
                    self.mark(node.span, "function")
            elif isinstance(node, ast.Name):
                self.refer(node.span, resolve(node.id))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                self.split_ref(node.value.id, node.attr)
            elif isinstance(node, ast.Quantity):
                self.mark(node.span, "quantity", node=node)

    def split_ref(self, head: str, attr: ast.Ident) -> None:
        dataset = self.node_of(head, ast.Dataset)
        if isinstance(dataset, ast.Dataset):
            self.refer(attr.span, split_targets(dataset).get(attr.name))

    def constraints(self, block: ast.Constraints) -> None:
        self.refer(block.target.span, self.symbol(block.target.name))
        for constraint in block.items:
            self.mark(constraint.span, "constraint", node=constraint)
            self.expression(constraint.expr, self.declared)
            if constraint.on is not None:
                self.expression(constraint.on, self.declared)
            if constraint.confidence is not None:
                self.expression(constraint.confidence.level, self.declared)


def _std_name(parts: list[str]) -> str:
    return "<std>/" + "/".join(parts) + ".fm"


def _file_start(file: str) -> Span:
    return Span(file, 1, 1, 1, 1)


def _join(first: Span, last: Span) -> Span:
    return Span(
        first.file, first.line, first.column, last.end_line, last.end_column, first.start, last.end
    )
