"""Declarations and blocks that say nothing, reported rather than silently accepted.

- a file with no declaration that imports no spec file either, only standard-library
  entries or nothing (FM0206, a warning; not repeated for a file whose syntax or imports
  are already in error);
- a block that does nothing: `clean { }` without rules, `split { }` without splits, a
  `constraints` block without bounds, an `eval` without `on` (FM0370, a warning: nothing
  runs that should not, but what the user meant is missing);
- a `schema { }` without columns (FM0317, an error: nothing downstream can read a dataset
  without columns).

Blocks that already have a rule of their own are not repeated here: an empty dataset,
labels, model, merge or deploy block is an error for what it lacks (FM0316/FM0317,
FM0320/FM0321, FM0330, FM0340, FM0360); an empty `train { }` is FM0337, an empty `dp { }`
FM0338, an empty `base_model` FM0339 and an empty `hardware` FM0335. Deployment targets
(`local { }`, `kserve { }`, …) are complete with their defaults.
"""

from __future__ import annotations

from fmlang.check.context import Ctx
from fmlang.check.program import Program, SourceFile
from fmlang.check.settings import setting
from fmlang.diagnostics import Severity, Span
from fmlang.syntax import ast


def check_empty(program: Program) -> None:
    for source in program.user_files():
        ctx = Ctx(program, source)
        _check_declares_something(ctx, source)
        for item in source.module.items:
            if isinstance(item, ast.Dataset):
                _check_dataset(ctx, item)
            elif isinstance(item, ast.Constraints) and not item.items:
                ctx.warn(
                    "FM0370",
                    f"`constraints {item.target.name}` states no bound",
                    item.target.span,
                    "an empty constraints block",
                    "add a bound such as `memory <= 8GiB on a10g` or "
                    "`accuracy >= 0.9 on data.test`, or remove the block",
                )
            elif isinstance(item, ast.Block) and item.kind in ("model", "merge"):
                _check_eval(ctx, item)


def _check_declares_something(ctx: Ctx, source: SourceFile) -> None:
    """Importing another spec file is enough: the build takes every user file's
    declarations, so a file of `import "team_a.fm"` lines builds them together."""
    items = source.module.items
    if any(not isinstance(i, ast.ImportModule) for i in items) or _has_errors(ctx, source):
        return  # a syntax or import error already says what is wrong with the file
    where = items[0].span if items else Span(source.path, 1, 1, 1, 1)
    ctx.warn(
        "FM0206",
        f"`{source.path}` declares nothing"
        + (" and imports only standard-library entries" if items else ""),
        where,
        "only standard-library imports" if items else "an empty spec",
        "declare a dataset, labels, model, merge, constraints or deploy block (or import "
        'the spec files to build together, `import "team_a.fm"`), or delete the file',
    )


def _has_errors(ctx: Ctx, source: SourceFile) -> bool:
    return any(
        d.severity is Severity.ERROR and d.primary_span and d.primary_span.file == source.path
        for d in ctx.program.sink.items
    )


def _check_dataset(ctx: Ctx, dataset: ast.Dataset) -> None:
    name = dataset.name.name
    for stmt in dataset.body:
        if isinstance(stmt, ast.Schema) and not stmt.fields:
            ctx.error(
                "FM0317",
                f"the schema of dataset `{name}` declares no columns",
                stmt.span,
                "no columns",
                "list the columns you use: `schema { id: string @id; body: text }`",
            )
        elif isinstance(stmt, ast.Clean) and not stmt.rules:
            ctx.warn(
                "FM0370",
                f"`clean {{ }}` in dataset `{name}` has no rules",
                stmt.span,
                "cleans nothing",
                "add a rule such as `dedupe COL` or `drop where length(COL) < 3`, or remove "
                "the block",
            )
        elif isinstance(stmt, ast.Split) and not stmt.parts:
            ctx.warn(
                "FM0370",
                f"`split {{ }}` in dataset `{name}` declares no splits",
                stmt.span,
                "splits nothing",
                "name the splits and their shares: `split { train 80%, test 20% by "
                "hash(ID) }`, or remove the block",
            )


def _check_eval(ctx: Ctx, block: ast.Block) -> None:
    found = setting(block.body, "eval")
    if isinstance(found, ast.BlockSetting) and setting(found.body, "on") is None:
        ctx.warn(
            "FM0370",
            f"`eval` in {block.kind} `{block.name.name}` names no data to evaluate on",
            found.key.span,
            "evaluates nothing",
            "add `on = [dataset.test]` (the splits to evaluate on), or remove the block",
        )
