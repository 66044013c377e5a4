"""Expressions nested deeper than the passes can follow are reported before any pass runs.

The parser builds long operator chains (`a + a + … + a`) without recursion, but every later
stage walks expressions recursively; this walk does not, so it can bound their depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from fmlang.check.program import Program
from fmlang.diagnostics import Span, error
from fmlang.syntax import ast

MAX_DEPTH = 100


def check_nesting(program: Program) -> bool:
    """Reports FM0106 for every user file nested too deeply; True when none is."""
    ok = True
    for source in program.user_files():
        span = deepest_span(source.module)
        if span is not None:
            ok = False
            program.sink.add(
                error(
                    "FM0106",
                    f"this expression is nested more than {MAX_DEPTH} levels deep",
                    span,
                    "nested too deeply",
                    help="split long chains of operators or nested lists into `let` constants "
                    "or several rules",
                )
            )
    return ok


def deepest_span(module: ast.Module) -> Span | None:
    """The span of the outermost expression holding a node deeper than MAX_DEPTH."""
    stack: list[tuple[object, int, object]] = [(item, 1, None) for item in module.items]
    while stack:
        node, depth, outermost = stack.pop()
        if outermost is None and isinstance(node, ast.Expr):
            outermost = node
        if depth > MAX_DEPTH:
            span = getattr(outermost or node, "span", None)
            return span if isinstance(span, Span) else module.span
        stack.extend((child, depth + 1, outermost) for child in _children(node))
    return None


def _children(node: object) -> Iterator[object]:
    for field in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, field.name)
        values = value if isinstance(value, tuple) else (value,)
        for child in values:
            if dataclasses.is_dataclass(child) and not isinstance(child, Span):
                yield child
