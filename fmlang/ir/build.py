"""Program → `Spec`: one small function per block, in `ir/build_*.py`.

`build_spec` runs after the checker reported no errors. It still never raises on a
well-formed AST: a value it cannot convert is left out (the checker has said why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from fmlang.check.program import Program, SourceFile, Symbol, own_symbols
from fmlang.ir import nodes as ir
from fmlang.ir.build_constraints import build_constraints
from fmlang.ir.build_data import build_dataset, build_labels
from fmlang.ir.build_models import (
    build_deployment,
    build_hardware,
    build_merge,
    build_model,
    build_pretrained,
)
from fmlang.ir.values import Scope
from fmlang.syntax import ast

N = TypeVar("N", bound=ir.Node)


def build_spec(program: Program) -> ir.Spec:
    """The IR of a checked program: every user declaration, plus the stdlib base models and
    hardware profiles the user's files can see."""
    user = program.user_files()
    visible = _visible_facts(program, user)
    return ir.Spec(
        entry=_entry(program),
        datasets=_build_all(program, user, ast.Dataset, build_dataset),
        labels=_build_all(program, user, ast.Labels, build_labels),
        models=_blocks(program, user, "model", build_model),
        merges=_blocks(program, user, "merge", build_merge),
        constraints=_constraints(program, user),
        deployments=_blocks(program, user, "deploy", build_deployment),
        base_models=_facts(program, visible, "base_model", build_pretrained),
        hardware=_facts(program, visible, "hardware", build_hardware),
    )


def _entry(program: Program) -> str:
    if program.roots:
        return program.roots[0]
    user = program.user_files()
    return user[0].path if user else ""


def _facts(
    program: Program, symbols: list[Symbol], kind: str, build: Callable[[ast.Block, Scope], N]
) -> tuple[N, ...]:
    return _sorted(
        build(s.node, Scope(program, s.file))
        for s in symbols
        if s.kind == kind and isinstance(s.node, ast.Block)
    )


def _sorted(nodes: Iterable[N]) -> tuple[N, ...]:
    """By name, then by file: deterministic whatever order files were loaded in."""
    return tuple(sorted(nodes, key=lambda n: (getattr(n, "name", ""), getattr(n, "file", ""))))


def _build_all(
    program: Program,
    files: list[SourceFile],
    node_type: type[ast.Dataset] | type[ast.Labels],
    build: Callable[..., N],
) -> tuple[N, ...]:
    return _sorted(
        build(item, Scope(program, source.path))
        for source in files
        for item in source.module.items
        if isinstance(item, node_type)
    )


def _blocks(
    program: Program, files: list[SourceFile], kind: str, build: Callable[[ast.Block, Scope], N]
) -> tuple[N, ...]:
    return _sorted(
        build(item, Scope(program, source.path))
        for source in files
        for item in source.module.items
        if isinstance(item, ast.Block) and item.kind == kind
    )


def _constraints(program: Program, files: list[SourceFile]) -> tuple[ir.Constraint, ...]:
    """Sorted by target; the order written within one target (sort is stable)."""
    found = [
        constraint
        for source in files
        for item in source.module.items
        if isinstance(item, ast.Constraints)
        for constraint in build_constraints(item, Scope(program, source.path))
    ]
    return tuple(sorted(found, key=lambda c: c.target))


def _visible_facts(program: Program, files: list[SourceFile]) -> list[Symbol]:
    """`base_model` and `hardware` symbols declared in or imported into user files."""
    found: dict[tuple[str, str], Symbol] = {}
    for source in files:
        symbols = [*own_symbols(source), *program.scopes.get(source.path, {}).values()]
        for symbol in symbols:
            if symbol.kind in ("base_model", "hardware"):
                found.setdefault((symbol.file, symbol.name), symbol)
    return list(found.values())
