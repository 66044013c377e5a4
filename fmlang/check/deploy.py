"""Deployments: the served model, targets, replicas and hardware."""

from __future__ import annotations

from fmlang.check import schema as s
from fmlang.check.context import Ctx
from fmlang.check.datasets import check_grant
from fmlang.check.program import Program
from fmlang.check.settings import check_body, setting
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
