"""Models: base, task, adapter, training, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fmlang.check import schema as s
from fmlang.check.context import Ctx, dotted
from fmlang.check.datasets import check_grant, live_columns
from fmlang.check.fisher import check_fisher_mask, check_training_settings
from fmlang.check.program import Program, Symbol
from fmlang.check.settings import check_body, setting, setting_value
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast


def check_models(program: Program) -> None:
    for source, symbol in program.declarations("model"):
        assert isinstance(symbol.node, ast.Block)
        _check_model(Ctx(program, source), symbol.node)


def _check_model(ctx: Ctx, model: ast.Block) -> None:
    name = model.name.name
    columns = _training_columns(ctx, model)
    check_body(ctx, model.body, s.MODEL, f"model `{name}`", columns)
    for key, example in (("base", "base minilm_l6"), ("task", "task classify(my_labels)")):
        if setting(model.body, key) is None:
            ctx.error(
                "FM0330",
                f"model `{name}` has no `{key}`",
                model.name.span,
                f"no {key}",
                f"add `{example}`",
            )
    base = base_block(ctx, model)
    if base is not None:
        _check_task_fits(ctx, model, base)
    for variant in adapter_variants(model):  # each candidate of `adapter auto in [...]`
        if base is not None:
            _check_targets(ctx, variant, base)
        check_fisher_mask(ctx, variant, base)
        check_training_settings(ctx, variant)
    for stmt in model.body:
        if isinstance(stmt, ast.Grant):
            check_grant(ctx, stmt)


def adapter_variants(model: ast.Block) -> list[ast.Block]:
    """The model as written, or for `adapter auto in [a(...), b(...)]` the model once per
    candidate adapter (the same spans, so a diagnostic points at that candidate)."""
    found = setting(model.body, "adapter")
    value = found.value if isinstance(found, ast.Setting) else None
    if not isinstance(value, ast.Auto) or not isinstance(value.domain, ast.ListExpr):
        return [model]
    assert isinstance(found, ast.Setting)
    return [
        replace(model, body=tuple(replace(found, value=item) if st is found else st
                                  for st in model.body))
        for item in value.domain.items
    ]  # fmt: skip


def base_block(ctx: Ctx, model: ast.Block) -> ast.Block | None:
    value = setting_value(model.body, "base")
    if not isinstance(value, ast.Name):
        return None
    symbol = ctx.lookup(value.id)
    if symbol is None or not isinstance(symbol.node, ast.Block) or symbol.kind != "base_model":
        return None
    return symbol.node


def _names(value: ast.Expr | None) -> list[ast.Name]:
    if isinstance(value, ast.ListExpr):
        return [i for i in value.items if isinstance(i, ast.Name)]
    return [value] if isinstance(value, ast.Name) else []


def _check_targets(ctx: Ctx, model: ast.Block, base: ast.Block) -> None:
    adapter = setting_value(model.body, "adapter")
    modules = [n.id for n in _names(setting_value(base.body, "modules"))]
    if not isinstance(adapter, ast.Call) or not modules:
        return
    for arg in adapter.args:
        if arg.name is None or arg.name.name not in ("targets", "feedforward"):
            continue
        for target in _names(arg.value):
            if target.id not in modules:
                ctx.error(
                    "FM0331",
                    f"base model `{base.name.name}` has no module `{target.id}`",
                    target.span,
                    "not a module of the base model",
                    did_you_mean(target.id, modules)
                    or f"its adaptable modules are {', '.join(modules)}",
                )


def _check_task_fits(ctx: Ctx, model: ast.Block, base: ast.Block) -> None:
    task = setting_value(model.body, "task")
    head = task.func if isinstance(task, ast.Call) else task
    kind = setting_value(base.body, "kind")
    if (
        isinstance(head, ast.Name)
        and head.id == "generate"
        and isinstance(kind, ast.Name)
        and kind.id == "encoder"
    ):
        ctx.error(
            "FM0332",
            f"`{base.name.name}` is an encoder and cannot `generate`",
            head.span,
            "encoder base model",
            "use a decoder base model (e.g. a Llama or Qwen entry) or `classify`/`embed`",
        )


def _training_columns(ctx: Ctx, model: ast.Block) -> Callable[[ast.Ident | ast.Name], None]:
    """A column checker bound to the model's training data, when it names one."""
    train = setting(model.body, "train")
    data = setting_value(train.body, "data") if isinstance(train, ast.BlockSetting) else None
    dataset = _dataset_behind(ctx, data) if data is not None else None

    def check(column: ast.Ident | ast.Name) -> None:
        name = column.name if isinstance(column, ast.Ident) else column.id
        if dataset is None:
            return
        columns = live_columns(dataset)
        if name not in columns:
            ctx.error(
                "FM0403",
                f"dataset `{dataset.name.name}` has no column `{name}`",
                column.span,
                "not a column (or dropped by a cleaning rule)",
                did_you_mean(name, columns),
            )

    return check


def _dataset_behind(ctx: Ctx, data: ast.Expr) -> ast.Dataset | None:
    parts = dotted(data)
    if not parts:
        return None
    symbol: Symbol | None = ctx.lookup(parts[0].name)
    if symbol is not None and isinstance(symbol.node, ast.Labels):
        # the labels' dataset, as named in the file that declares the labels
        symbol = ctx.program.lookup(symbol.file, symbol.node.source[0].name)
    if symbol is not None and isinstance(symbol.node, ast.Dataset):
        return symbol.node
    return None
