"""Labels: classes, labeling functions and the label model."""

from __future__ import annotations

import re
from dataclasses import replace

from fmlang.check import schema as s
from fmlang.check.context import Ctx
from fmlang.check.datasets import check_grant, live_columns, split_names
from fmlang.check.expressions import BOOL, ExprChecker
from fmlang.check.labels_apply import check_apply_to
from fmlang.check.program import Program
from fmlang.check.settings import check_body, setting_value
from fmlang.diagnostics import Label, error
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast

_PYTHON_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def classes_of(labels: ast.Labels) -> list[str]:
    value = setting_value(labels.body, "classes")
    if isinstance(value, ast.ListExpr):
        return [item.id for item in value.items if isinstance(item, ast.Name)]
    return []


def check_labels(program: Program) -> None:
    for source, symbol in program.declarations("labels"):
        assert isinstance(symbol.node, ast.Labels)
        _check_labels(Ctx(program, source), symbol.node)


def _check_labels(ctx: Ctx, labels: ast.Labels) -> None:
    body = _label_model_knobs(ctx, labels.body)
    check_body(ctx, body, s.LABELS, f"labels `{labels.name.name}`")
    columns = _source_columns(ctx, labels)
    classes = classes_of(labels)
    _check_classes(ctx, labels, classes)
    seen: dict[str, ast.Ident] = {}
    functions = [stmt for stmt in labels.body if isinstance(stmt, ast.LabelingFunction)]
    if not functions:
        ctx.error(
            "FM0321",
            f"labels `{labels.name.name}` has no labeling functions",
            labels.name.span,
            "nothing votes",
            "add `lf name: condition -> class`",
        )
    for lf in functions:
        if lf.name.name in seen:
            ctx.report(
                error(
                    "FM0325",
                    f"labeling function `{lf.name.name}` is declared twice",
                    lf.name.span,
                    "declared again",
                    related=(Label(seen[lf.name.name].span, "first here", False),),
                )
            )
        seen[lf.name.name] = lf.name
        _check_lf(ctx, lf, columns, classes)
    for stmt in labels.body:
        if isinstance(stmt, ast.Grant):
            check_grant(ctx, stmt)
    check_apply_to(ctx, labels, columns)


def _label_model_knobs(ctx: Ctx, body: tuple[ast.LabelsStmt, ...]) -> tuple[ast.LabelsStmt, ...]:
    """FM0380 for `label_model` settings that would do nothing: `lr` (EM has no learning
    rate; taken out of the body so it is not reported again as unknown) and `seed` without
    `tie = random` (the fit draws no random numbers)."""
    out: list[ast.LabelsStmt] = []
    for stmt in body:
        call = stmt.value if isinstance(stmt, ast.Setting) and stmt.key.name == "model" else None
        if not (
            isinstance(stmt, ast.Setting)
            and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "label_model"
        ):
            out.append(stmt)
            continue
        kept = []
        for arg in call.args:
            if arg.name is not None and arg.name.name == "lr":
                ctx.error(
                    "FM0380",
                    "the label model has no learning rate: it is fitted by EM",
                    arg.name.span,
                    "`lr` would be ignored",
                    "remove `lr`; `epochs`, `tolerance` and `smoothing` control the fit",
                )
            else:
                kept.append(arg)
        _seed_without_random_ties(ctx, kept)
        out.append(replace(stmt, value=replace(call, args=tuple(kept))))
    return tuple(out)


def _seed_without_random_ties(ctx: Ctx, args: list[ast.Argument]) -> None:
    named = {arg.name.name: arg for arg in args if arg.name is not None}
    seed, tie = named.get("seed"), named.get("tie")
    if seed is None or seed.name is None:
        return
    if tie is not None and isinstance(tie.value, ast.Name) and tie.value.id == "random":
        return
    ctx.error(
        "FM0380",
        "`seed` does nothing here: the label model's fit draws no random numbers, and "
        "`seed` only settles ties under `tie = random`",
        seed.name.span,
        "`seed` would be ignored",
        "remove `seed`, or add `tie = random` to break exact ties at random",
    )


def _source_columns(ctx: Ctx, labels: ast.Labels) -> dict[str, str] | None:
    dataset_ident = labels.source[0]
    symbol = ctx.resolve(dataset_ident, ("dataset",))
    if symbol is None:
        return None
    assert isinstance(symbol.node, ast.Dataset)
    if len(labels.source) > 2:
        ctx.error(
            "FM0404",
            "label a dataset or one split: `on dataset` or `on dataset.split`",
            labels.source[2].span,
            "too many parts",
        )
    elif len(labels.source) == 2:
        splits = split_names(symbol.node)
        wanted = labels.source[1]
        if wanted.name not in splits:
            ctx.error(
                "FM0404",
                f"dataset `{symbol.name}` has no split `{wanted.name}`",
                wanted.span,
                "unknown split",
                did_you_mean(wanted.name, splits)
                or (f"its splits are {', '.join(splits)}" if splits else "it declares no splits"),
            )
    return live_columns(symbol.node)


def _check_classes(ctx: Ctx, labels: ast.Labels, classes: list[str]) -> None:
    value = setting_value(labels.body, "classes")
    if value is None:
        ctx.error(
            "FM0320",
            f"labels `{labels.name.name}` declares no classes",
            labels.name.span,
            "no classes",
            "add `classes [negative, positive]`",
        )
        return
    if len(classes) < 2:
        ctx.error("FM0320", "labels need at least two classes", value.span, "too few classes")
    if len(set(classes)) != len(classes):
        ctx.error("FM0320", "a class is listed twice", value.span, "repeated class")


def _check_lf(
    ctx: Ctx, lf: ast.LabelingFunction, columns: dict[str, str] | None, classes: list[str]
) -> None:
    python = _python_ref(lf.expr)
    if python is not None:
        if not _PYTHON_REF.match(python.value):
            ctx.error(
                "FM0326",
                f"`{python.value}` is not a Python function reference",
                python.span,
                "expected `module.path:function`",
                'write `python("my_package.lfs:is_spam")`',
            )
        if lf.target is not None and classes and lf.target.name not in classes:
            _unknown_class(ctx, lf.target, classes)
        return
    if lf.target is None:
        ctx.error(
            "FM0321",
            f"labeling function `{lf.name.name}` names no class",
            lf.expr.span,
            "votes for nothing",
            f"end it with `-> {classes[0] if classes else 'class'}`",
        )
    elif classes and lf.target.name not in classes:  # no classes: FM0320 said so already
        _unknown_class(ctx, lf.target, classes)
    if columns is not None:
        checker = ExprChecker(ctx, columns, f"labeling function `{lf.name.name}`")
        checker.expect(lf.expr, BOOL, "a labeling function's condition")


def _unknown_class(ctx: Ctx, target: ast.Ident, classes: list[str]) -> None:
    ctx.error(
        "FM0405",
        f"unknown class `{target.name}`",
        target.span,
        "not one of the classes",
        did_you_mean(target.name, classes) or f"classes: {', '.join(classes)}",
    )


def _python_ref(expr: ast.Expr) -> ast.String | None:
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Name)
        and expr.func.id == "python"
        and len(expr.args) == 1
        and isinstance(expr.args[0].value, ast.String)
    ):
        return expr.args[0].value
    return None
