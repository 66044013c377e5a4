"""Program → `Spec`: one small function per block, in `ir/build_*.py`.

`build_spec` runs after the checker reported no errors. It still never raises on a
well-formed AST: a value it cannot convert is left out (the checker has said why).

Paths in the IR do not depend on the working directory: `Spec.entry` is the root spec's
file name and every `file` is relative to the root spec's folder (`/`-separated);
stdlib files keep their `<std>/…` names.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import TypeVar

from fmlang.check.loader import display_path
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
from fmlang.ir.selection import expand as expand_selections
from fmlang.ir.values import Scope
from fmlang.syntax import ast

N = TypeVar("N", bound=ir.Node)


def build_spec(program: Program) -> ir.Spec:
    """The IR of a checked program: every user declaration, plus the stdlib base models and
    hardware profiles the user's files can see."""
    names = ir_file_names(program)
    user = program.user_files()
    visible = _visible_facts(program, user)

    def scope(file: str) -> Scope:
        return Scope(program, file, names.get(file, file))

    spec = ir.Spec(
        entry=names.get(entry_file(program), ""),
        datasets=_items(user, scope, ast.Dataset, build_dataset),
        labels=_items(user, scope, ast.Labels, build_labels),
        models=_blocks(user, scope, "model", build_model),
        merges=_blocks(user, scope, "merge", build_merge),
        constraints=_constraints(user, scope),
        deployments=_blocks(user, scope, "deploy", build_deployment),
        base_models=_facts(visible, scope, "base_model", build_pretrained),
        hardware=_facts(visible, scope, "hardware", build_hardware),
    )
    return expand_selections(spec)  # a model per `base auto in [...]` candidate


def entry_file(program: Program) -> str:
    """The program's key for the root spec (the first root)."""
    if program.roots:
        key = display_path(Path(program.roots[0]))
        if key in program.files:
            return key
        if program.roots[0] in program.files:
            return program.roots[0]
    user = program.user_files()
    return user[0].path if user else ""


def ir_file_names(program: Program) -> dict[str, str]:
    """Each file's name in the IR: relative to the entry's folder, or `<std>/…` as is."""
    folder = posixpath.dirname(_posix(entry_file(program)))
    names: dict[str, str] = {}
    for key, source in program.files.items():
        if source.stdlib or key.startswith("<"):
            names[key] = key
        else:
            names[key] = posixpath.relpath(_posix(key), folder or ".")
    return names


def _posix(path: str) -> str:
    return PurePath(path).as_posix()


def _sorted(nodes: Iterable[N]) -> tuple[N, ...]:
    """By name, then by file: deterministic whatever order files were loaded in."""
    return tuple(sorted(nodes, key=lambda n: (getattr(n, "name", ""), getattr(n, "file", ""))))


def _items(
    files: list[SourceFile],
    scope: Callable[[str], Scope],
    node_type: type[ast.Dataset] | type[ast.Labels],
    build: Callable[..., N],
) -> tuple[N, ...]:
    return _sorted(
        build(item, scope(source.path))
        for source in files
        for item in source.module.items
        if isinstance(item, node_type)
    )


def _blocks(
    files: list[SourceFile],
    scope: Callable[[str], Scope],
    kind: str,
    build: Callable[[ast.Block, Scope], N],
) -> tuple[N, ...]:
    return _sorted(
        build(item, scope(source.path))
        for source in files
        for item in source.module.items
        if isinstance(item, ast.Block) and item.kind == kind
    )


def _facts(
    symbols: list[Symbol],
    scope: Callable[[str], Scope],
    kind: str,
    build: Callable[[ast.Block, Scope], N],
) -> tuple[N, ...]:
    return _sorted(
        build(s.node, scope(s.file))
        for s in symbols
        if s.kind == kind and isinstance(s.node, ast.Block)
    )


def _constraints(
    files: list[SourceFile], scope: Callable[[str], Scope]
) -> tuple[ir.Constraint, ...]:
    """Sorted by target; the order written within one target (sort is stable)."""
    found = [
        constraint
        for source in files
        for item in source.module.items
        if isinstance(item, ast.Constraints)
        for constraint in build_constraints(item, scope(source.path))
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
