"""`dataset` and `labels` blocks → IR."""

from __future__ import annotations

from typing import Any

from fmlang.check import schema as s
from fmlang.check.settings import setting
from fmlang.ir import nodes as ir
from fmlang.ir.build_expr import build_expr
from fmlang.ir.values import CallValue, Scope, fraction, grants, settings, span_of
from fmlang.syntax import ast


def dataset_columns(node: ast.Dataset) -> tuple[str, ...]:
    """Every column the schema declares, in order."""
    return tuple(
        f.name.name for stmt in node.body if isinstance(stmt, ast.Schema) for f in stmt.fields
    )


def build_dataset(node: ast.Dataset, scope: Scope) -> ir.Dataset:
    scope = scope.with_columns(dataset_columns(node))
    values = settings(node.body, s.DATASET, scope)
    return ir.Dataset(
        name=node.name.name,
        file=scope.ir_file,
        source=_source(values.get("source"), span_of(setting(tuple(node.body), "source"))),
        description=values.get("description"),
        columns=tuple(
            _column(f, scope) for stmt in node.body if isinstance(stmt, ast.Schema)
            for f in stmt.fields
        ),
        cleaning=tuple(
            _clean_step(rule, scope) for stmt in node.body if isinstance(stmt, ast.Clean)
            for rule in stmt.rules
        ),
        splits=_splits(node, scope),
        grants=grants(node.body),
        epsilon_budget=values.get("epsilon_budget"),
        forget=_forget(node, scope, values.get("forget"),
                       span_of(setting(tuple(node.body), "forget"))),
        span=span_of(node.name),
    )  # fmt: skip


def _forget(node: ast.Dataset, scope: Scope, path: Any,
            span: ir.SourceSpan | None) -> ir.Forget | None:  # fmt: skip
    """The requests `check/forget.py` read from the dataset's forget file; none (and no
    sha256, which the data stage refuses) when the file was not read."""
    if not isinstance(path, str):
        return None
    read = scope.program.forget.get((scope.file, node.name.name))
    tagged = [f for stmt in node.body if isinstance(stmt, ast.Schema) for f in stmt.fields]
    id_column = next((f.name.name for f in tagged if any(t.name == "id" for t in f.tags)), None)
    if read is None:
        return ir.Forget(path=path, sha256="", id_column=id_column, span=span)
    requests = tuple(
        ir.ForgetRequest(
            request=r.request,
            by=r.by,
            at=r.at,
            ids=r.ids,
            where=build_expr(r.where, scope) if r.where is not None else None,
            span=ir.SourceSpan.of(r.span),
        )
        for r in read.requests
    )
    return ir.Forget(path=path, sha256=read.sha256, requests=requests, id_column=id_column,
                     span=span)  # fmt: skip


def _source(value: Any, span: ir.SourceSpan | None) -> ir.Source | None:
    if not isinstance(value, CallValue):
        return None
    path = value.positional[0] if value.positional else ""
    return ir.Source.model_validate(
        {"kind": value.head, "path": str(path), "options": value.options(), "span": span}
    )


def _column(field: ast.Field, scope: Scope) -> ir.Column:
    derived = None if field.default is None else build_expr(field.default, scope)
    options = settings(field.options, s.COLUMN, scope)
    return ir.Column(
        name=field.name.name,
        type=field.type.name.name,
        classes=tuple(a.name for a in field.type.args),
        tags=tuple(t.name for t in field.tags),
        derived=derived,
        on_cast_error=options.get("on_cast_error", "fail"),
        path=options.get("from"),
        span=span_of(field),
    )


def _clean_step(rule: ast.CleanRule, scope: Scope) -> ir.CleanStep:
    span = span_of(rule)
    if isinstance(rule, ast.Dedupe):
        near = None if rule.near is None else fraction(rule.near)
        return ir.Dedupe(columns=_names(rule.columns), near=near, span=span)
    if isinstance(rule, ast.FilterRows):
        return ir.FilterRows(keep=rule.keep, condition=build_expr(rule.condition, scope), span=span)
    if isinstance(rule, ast.DropColumns):
        return ir.DropColumns(columns=_names(rule.columns), span=span)
    if isinstance(rule, ast.Normalize):
        return ir.Normalize(
            columns=_names(rule.columns), operations=_names(rule.operations), span=span
        )
    return ir.Redact(kinds=_names(rule.kinds), columns=_names(rule.columns), span=span)


def _names(idents: tuple[ast.Ident, ...]) -> tuple[str, ...]:
    return tuple(i.name for i in idents)


def _splits(node: ast.Dataset, scope: Scope) -> ir.SplitSpec | None:
    """The first `split` block (the checker reports a second one)."""
    for stmt in node.body:
        if isinstance(stmt, ast.Split):
            parts = tuple(
                ir.SplitPart(name=p.name.name, fraction=fraction(p.share) or 0.0, span=span_of(p))
                if not isinstance(p.share, ast.String)
                else ir.SplitPart(
                    name=p.name.name, fraction=0.0, files=p.share.value, span=span_of(p)
                )
                for p in stmt.parts
            )
            by = None if stmt.by is None else build_expr(stmt.by, scope)
            return ir.SplitSpec(parts=parts, by=by, span=span_of(stmt))
    return None


# ---- labels ---------------------------------------------------------------------------


def build_labels(node: ast.Labels, scope: Scope) -> ir.Labels:
    dataset = node.source[0].name
    symbol = scope.lookup(dataset)
    if symbol is not None and isinstance(symbol.node, ast.Dataset):
        scope = scope.with_columns(dataset_columns(symbol.node))
    values = settings(node.body, s.LABELS, scope)
    model = values.get("model")
    return ir.Labels(
        name=node.name.name,
        file=scope.ir_file,
        dataset=dataset,
        split=node.source[1].name if len(node.source) > 1 else None,
        classes=values.get("classes", ()),
        functions=tuple(
            _labeling_function(stmt, scope) for stmt in node.body
            if isinstance(stmt, ast.LabelingFunction)
        ),
        model=_label_model(model) if isinstance(model, CallValue) else ir.LabelModelSpec(
            kind="label_model"),
        apply_to=values.get("apply_to", ()),
        grants=grants(node.body),
        span=span_of(node.name),
    )  # fmt: skip


def _label_model(value: CallValue) -> ir.LabelModelSpec:
    return ir.LabelModelSpec.model_validate({"kind": value.head, "options": value.options()})


def _labeling_function(node: ast.LabelingFunction, scope: Scope) -> ir.LabelingFunction:
    """`lf name: expr -> target`; `lf name: python("pkg.module:function") -> target`."""
    target = None if node.target is None else node.target.name
    python = _python_reference(node.expr)
    expr = None if python is not None else build_expr(node.expr, scope)
    return ir.LabelingFunction(
        name=node.name.name, expr=expr, python=python, target=target, span=span_of(node)
    )


def _python_reference(expr: ast.Expr) -> str | None:
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Name)
        and expr.func.id == "python"
        and len(expr.args) == 1
        and expr.args[0].name is None
        and isinstance(expr.args[0].value, ast.String)
    ):
        return expr.args[0].value.value
    return None
