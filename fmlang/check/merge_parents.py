"""What a merge needs to know about each model it merges, read off the model's own blocks:
its base model (and the weights that base names), adapter kind, targets, rank and task.

Every fact is resolved as the lowering resolves it (`fmlang.lower.adapters`): an omitted
`rank` is DEFAULT_RANK, a written `auto` rank is left to the solver (None here), and a base
model is identified by the weights it loads (`weights hub("org/name", revision = …)`, the
hub id a `pip` package bundles), which is what the merge executor compares
(`base_model_name_or_path` and `revision`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from fmlang.check.context import Ctx
from fmlang.check.labels import classes_of
from fmlang.check.program import Symbol
from fmlang.check.settings import setting, setting_value
from fmlang.diagnostics import Span
from fmlang.syntax import ast

DEFAULT_RANK = 8  # the rank the lowering writes when `rank` is omitted (lower.adapters)


@dataclass(frozen=True)
class BaseFacts:
    """A base model as a merge compares it: what it loads, and the facts that explain why
    two different bases are still not interchangeable."""

    name: str
    loads: tuple[str, str] | None  # (what `from_pretrained` loads, revision); None: no weights
    vocab: int | None
    hidden: int | None
    layers: int | None
    family: str | None

    @property
    def identity(self) -> tuple[str, ...]:
        """Equal for two bases exactly when the merge executor sees one base model: the
        same loadable name and revision (a base without weights is only itself)."""
        return self.loads if self.loads is not None else ("declared", self.name)

    @property
    def shows(self) -> str:
        if self.loads is None:
            return f"`{self.name}` (no `weights`)"
        loads, revision = self.loads
        return f"`{self.name}` ({loads}{f' at revision {revision}' if revision else ''})"


@dataclass(frozen=True)
class Parent:
    """One merged model, with the span of each setting a merge diagnostic points at."""

    name: str
    ref: ast.Name  # its entry in the merge's `models [...]`
    model_span: Span
    base: BaseFacts | None
    base_span: Span
    adapter: str | None  # lora, dora, ia3, prefix, prompt, full; None without an adapter
    adapter_span: Span
    targets: tuple[str, ...]
    targets_span: Span
    rank: int | None  # None when the solver chooses it (`rank = auto …`)
    rank_span: Span
    task: str | None
    task_span: Span
    classes: tuple[str, ...]


def merged_parents(ctx: Ctx, merge: ast.Block) -> list[Parent]:
    """The merge's models that resolve to a model block; references the settings check
    already reported (unknown names, wrong kinds) are left out."""
    models = setting_value(merge.body, "models")
    items = models.items if isinstance(models, ast.ListExpr) else ()
    parents = []
    for item in items:
        symbol = ctx.lookup(item.id) if isinstance(item, ast.Name) else None
        if isinstance(item, ast.Name) and symbol is not None and symbol.kind == "model":
            parents.append(_parent(ctx, item, symbol))
    return parents


def _parent(ctx: Ctx, ref: ast.Name, symbol: Symbol) -> Parent:
    node = symbol.node
    assert isinstance(node, ast.Block)
    where = node.name.span
    adapter = setting(node.body, "adapter")
    value = adapter.value if isinstance(adapter, ast.Setting) else None
    head, args = _call_parts(value)
    task = setting(node.body, "task")
    task_head, task_args = _call_parts(task.value if isinstance(task, ast.Setting) else None)
    base = setting(node.body, "base")
    targets = args.get("targets")
    rank = args.get("rank")
    adapter_span = adapter.span if adapter is not None else where
    return Parent(
        name=symbol.name,
        ref=ref,
        model_span=where,
        base=_base_facts(ctx, symbol, base.value if isinstance(base, ast.Setting) else None),
        base_span=base.span if base is not None else where,
        adapter=head,
        adapter_span=adapter_span,
        targets=tuple(sorted(_names(targets.value if targets else None))),
        targets_span=targets.span if targets is not None else adapter_span,
        rank=_rank(rank.value if rank is not None else None),
        rank_span=rank.span if rank is not None else adapter_span,
        task=task_head,
        task_span=task.span if task is not None else where,
        classes=_classes(ctx, symbol, task_args),
    )


def _call_parts(value: ast.Expr | None) -> tuple[str | None, dict[str, ast.Argument]]:
    """`lora(rank = 8)` → ("lora", {"rank": …}); a bare `full` → ("full", {})."""
    if isinstance(value, ast.Name):
        return value.id, {}
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        named = {a.name.name: a for a in value.args if a.name is not None}
        positional = [a for a in value.args if a.name is None]
        named.update({f"#{i}": a for i, a in enumerate(positional)})
        return value.func.id, named
    return None, {}


def _names(value: ast.Expr | None) -> list[str]:
    items = value.items if isinstance(value, ast.ListExpr) else (value,) if value else ()
    return [item.id for item in items if isinstance(item, ast.Name)]


def _rank(value: ast.Expr | None) -> int | None:
    if value is None:
        return DEFAULT_RANK
    return _whole(value)  # None: `auto` (the solver's choice) or a value refused elsewhere


def _classes(ctx: Ctx, model: Symbol, task_args: dict[str, ast.Argument]) -> tuple[str, ...]:
    labels = task_args.get("#0")
    if labels is None or not isinstance(labels.value, ast.Name):
        return ()
    symbol = ctx.program.lookup(model.file, labels.value.id)
    if symbol is None or not isinstance(symbol.node, ast.Labels):
        return ()
    return tuple(classes_of(symbol.node))


def _base_facts(ctx: Ctx, model: Symbol, value: ast.Expr | None) -> BaseFacts | None:
    """The base model the `base` setting names, looked up where the model is declared."""
    if not isinstance(value, ast.Name):
        return None
    symbol = ctx.program.lookup(model.file, value.id)
    if symbol is None or symbol.kind != "base_model" or not isinstance(symbol.node, ast.Block):
        return None
    body = symbol.node.body
    family = setting_value(body, "family")
    return BaseFacts(
        name=symbol.name,
        loads=_loads(symbol, setting_value(body, "weights")),
        vocab=_whole(setting_value(body, "vocab")),
        hidden=_whole(setting_value(body, "hidden")),
        layers=_whole(setting_value(body, "layers")),
        family=family.value if isinstance(family, ast.String) else None,
    )


def _loads(base: Symbol, value: ast.Expr | None) -> tuple[str, str] | None:
    """What the base loads, as the lowered adapter config names it (the hub id a `pip`
    package bundles, else the location) and its revision; a `local` folder is relative to
    the file that declares the base."""
    head, args = _call_parts(value)
    location, bundled = _text(args.get("#0")), _text(args.get("id"))
    if head is None or location is None:
        return None
    if head == "pip" and bundled:
        location = bundled
    elif head == "local" and not base.file.startswith("<std>"):
        location = posixpath.normpath(posixpath.join(posixpath.dirname(base.file), location))
    return (location, _text(args.get("revision")) or "")


def _text(argument: ast.Argument | None) -> str | None:
    value = argument.value if argument is not None else None
    return value.value if isinstance(value, ast.String) else None


def _whole(value: ast.Expr | None) -> int | None:
    """A whole number as written (exact, however many digits), else None."""
    if isinstance(value, ast.Number) and value.is_integer:
        return int(value.text.replace("_", ""))
    return None
