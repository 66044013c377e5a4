"""Deployments: the served model, targets, replicas and hardware. A deployed classifier
must carry its trained head to the server (FM0612): the server loads the base checkpoint
and the model's PEFT adapter, so a classifier trained without one would answer from the
checkpoint's head, randomly initialised when the checkpoint has none."""

from __future__ import annotations

from fmlang.check import schema as s
from fmlang.check.context import Ctx
from fmlang.check.datasets import check_grant
from fmlang.check.fisher import check_not_deployed
from fmlang.check.program import Program
from fmlang.check.settings import check_body, setting, setting_value
from fmlang.check.training import task_of
from fmlang.syntax import ast

TARGETS = ("local", "kserve", "kubernetes", "compose")


def check_deployments(program: Program) -> None:
    for source in program.user_files():
        ctx = Ctx(program, source)
        for item in source.module.items:
            if isinstance(item, ast.Block) and item.kind == "deploy":
                _check_deploy(ctx, item)


def _check_deploy(ctx: Ctx, deploy: ast.Block) -> None:
    ctx.resolve(deploy.name, ("model", "merge"))
    check_body(ctx, deploy.body, s.DEPLOY, f"deploy `{deploy.name.name}`")
    if not any(setting(deploy.body, t) is not None for t in TARGETS):
        ctx.error(
            "FM0360",
            f"deploy `{deploy.name.name}` names no target",
            deploy.name.span,
            "deployed where?",
            "add `local { port = 8080 }` or `kserve { replicas = 1..4 }`",
        )
    for stmt in deploy.body:
        if isinstance(stmt, ast.Grant):
            check_grant(ctx, stmt)
    _check_classifier_head(ctx, deploy)
    served = ctx.lookup(deploy.name.name)
    if served is not None and served.kind == "model" and isinstance(served.node, ast.Block):
        check_not_deployed(ctx, deploy, served.node)


def _check_classifier_head(ctx: Ctx, deploy: ast.Block) -> None:
    """FM0612: a trained `classify` model without an adapter, deployed with adapters loaded
    (not merged): its trained head would not be served."""
    symbol = ctx.lookup(deploy.name.name)
    model = symbol.node if symbol is not None and symbol.kind == "model" else None
    if not isinstance(model, ast.Block) or task_of(model) != "classify":
        return
    if setting(model.body, "train") is None or setting(model.body, "adapter") is not None:
        return
    merged = setting_value(deploy.body, "adapters")
    if isinstance(merged, ast.Name) and merged.id == "merged":
        return
    ctx.error(
        "FM0612",
        f"deploy `{deploy.name.name}` would serve classifier `{model.name.name}` without its "
        "trained head: the model trains without an adapter, and the server loads the base "
        "checkpoint (its head randomly initialised when it has none)",
        deploy.name.span,
        "the fine-tuned head is not served",
        "give the model a LoRA adapter (`adapter lora(rank = 8, targets = [query, value])`): "
        "peft saves the trained head with it",
    )
