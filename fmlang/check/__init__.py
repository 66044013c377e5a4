"""Name resolution, types, units and references: one pass function per concern.

`PASSES` runs in order over a loaded `Program`; each pass reports every user error it
finds and keeps going, so one run shows all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fmlang.check import schema
from fmlang.check.constraints import check_constraints
from fmlang.check.datasets import check_datasets
from fmlang.check.declarations import check_unique_names
from fmlang.check.deploy import check_deployments
from fmlang.check.effects import check_effects
from fmlang.check.empty import check_empty
from fmlang.check.labels import check_labels
from fmlang.check.loader import Loader
from fmlang.check.merges import check_merges
from fmlang.check.models import check_models
from fmlang.check.nesting import check_nesting
from fmlang.check.program import Program
from fmlang.check.resources import check_resources
from fmlang.check.selection import check_selections
from fmlang.check.settings import check_body
from fmlang.check.training import check_training
from fmlang.syntax.parser import too_deep

Pass = Callable[[Program], None]
# not text (FM0002), too large (FM0003), not a spec (FM0004), past the import budget (FM0208)
STOPPING = ("FM0002", "FM0003", "FM0004", "FM0208")


def check_stdlib_blocks(program: Program) -> None:
    """`base_model` and `hardware` declared in the user's own files follow the same table."""
    from fmlang.check.context import Ctx
    from fmlang.syntax import ast

    for source, symbol in program.declarations():
        node = symbol.node
        if isinstance(node, ast.Block) and node.kind in ("base_model", "hardware"):
            check_body(
                Ctx(program, source),
                node.body,
                schema.BLOCKS[node.kind],
                f"{node.kind} `{node.name.name}`",
            )


PASSES: tuple[Pass, ...] = (
    check_unique_names,
    check_stdlib_blocks,
    check_datasets,
    check_labels,
    check_models,
    check_selections,
    check_resources,
    check_merges,
    check_constraints,
    check_deployments,
    check_training,
    check_empty,
    check_effects,
)


def load(paths: list[Path]) -> Program:
    program = Program(roots=[str(p) for p in paths])
    loader = Loader(program)
    for path in paths:
        loader.load_root(path)
    return program


def load_text(text: str, file: str, base: Path) -> Program:
    program = Program(roots=[file])
    Loader(program).load_text(text, file, base)
    return program


def run_passes(program: Program) -> Program:
    # A root that cannot be read (FM0001) leaves nothing behind to cascade from, so the
    # other roots are still checked; a file that is not a text spec, or is too large, stops
    # the passes.
    if any(d.code in STOPPING for d in program.sink.items):
        return program
    if not check_nesting(program):
        return program
    try:
        for check in PASSES:
            check(program)
    except RecursionError:
        program.sink.add(too_deep(program.roots[0] if program.roots else "<input>"))
    return program


__all__ = ["PASSES", "Program", "load", "load_text", "run_passes"]
