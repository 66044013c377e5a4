"""Model selection: `base auto in [a, b]` and/or `adapter auto in [lora(...), ...]` with
`select by METRIC on SPLIT`.

The two go together: a candidate list without `select by` leaves nothing to choose by, and
`select by` without a candidate list has nothing to choose from (FM0373, FM0374). Each
adapter candidate is checked as the model's adapter would be (`check/models.py`). The
objective must be something the run measures: the split is one the model evaluates on, and
the metric one its task reports (FM0378). Each candidate must be able to do the task with
the model's adapter, or it is refused by name (FM0375): an encoder cannot `generate`, and the
adapter's `targets` must be modules of every candidate. A deployment of a selection model
serves the winner (`fmc serve` loads the base `fmc run` chose; the verifier holds the
deployment's bounds for every candidate). A merge of one is refused (FM0379): a merge needs
its parents on one base, proven before compute is spent, and the winner's base is known only
after training: pin the base to merge.

Which candidates meet the static constraints is the verifier's question
(`fmlang.verify.selection`), asked after these checks pass.
"""

from __future__ import annotations

from fmlang.check import schema as s
from fmlang.check.context import Ctx, dotted
from fmlang.check.program import Program
from fmlang.check.settings import check_data_ref, setting, setting_value
from fmlang.syntax import ast

GENERATIVE_METRICS = ("perplexity", "loss")


def check_selections(program: Program) -> None:
    selecting: set[str] = set()
    for source, symbol in program.declarations("model"):
        assert isinstance(symbol.node, ast.Block)
        if _check_model(Ctx(program, source), symbol.node):
            selecting.add(symbol.name)
    if not selecting:
        return
    for source in program.user_files():
        for item in source.module.items:
            if isinstance(item, ast.Block) and item.kind == "merge":
                _check_merge(Ctx(program, source), item, selecting)


def _check_model(ctx: Ctx, model: ast.Block) -> bool:
    """Report what is wrong with the model's selection; True when it selects its base or
    its adapter."""
    select = next((st for st in model.body if isinstance(st, ast.Setting) and st.by), None)
    autos = {key: value for key in ("base", "adapter")
             if isinstance(value := setting_value(model.body, key), ast.Auto)}  # fmt: skip
    name = model.name.name
    if not autos:
        if select is not None:
            ctx.error(
                "FM0374",
                f"model `{name}` selects by `{_text(select.value)}` but has one base and one "
                "adapter",
                select.span,
                "nothing to choose from",
                "list the candidates: `base auto in [minilm_l6, other_model]` or "
                "`adapter auto in [lora(rank = 8), fisher_mask(density = 0.5%)]`",
            )
        return False
    listed = {k: a.domain for k, a in autos.items() if isinstance(a.domain, ast.ListExpr)}
    for key, auto in autos.items():
        if key not in listed:
            ctx.error(
                "FM0373",
                f"model `{name}` leaves its {key} `auto` without a list of candidates",
                auto.span,
                "no candidates",
                f"list them: {EXAMPLES[key]}",
            )
    if len(listed) < len(autos):
        return True
    if select is None:
        key, auto = next(iter(autos.items()))
        ctx.error(
            "FM0373",
            f"model `{name}` has {key} candidates but no `select by`",
            auto.span,
            "how is one chosen?",
            "add `select by accuracy on DATASET.SPLIT` (or f1, perplexity, loss)",
        )
    else:
        _check_objective(ctx, model, select)
    adapters = list(listed["adapter"].items) if "adapter" in listed else []
    _check_adapter_list(ctx, adapters)
    if "base" in listed:
        _check_candidates(ctx, model, listed["base"], adapters)
    return True


EXAMPLES = {
    "base": "`base auto in [minilm_l6, other_model]`",
    "adapter": "`adapter auto in [lora(rank = 8), fisher_mask(density = 0.5%)]`",
}


def _check_adapter_list(ctx: Ctx, adapters: list[ast.Expr]) -> None:
    """Each adapter candidate once (the settings and model checkers check each one)."""
    seen: list[ast.Expr] = []  # spans do not take part in equality
    for item in adapters:
        if item in seen:
            ctx.error(
                "FM0373",
                "adapter candidate is listed twice",
                item.span,
                "again",
                "list each candidate once",
            )
        seen.append(item)


def _check_objective(ctx: Ctx, model: ast.Block, select: ast.Setting) -> None:
    metric = select.value.id if isinstance(select.value, ast.Name) else None
    task = setting_value(model.body, "task")
    head = task.func if isinstance(task, ast.Call) else task
    generates = isinstance(head, ast.Name) and head.id == "generate"
    if metric in s.SELECT_METRICS and generates != (metric in GENERATIVE_METRICS):
        fits = GENERATIVE_METRICS if generates else ("accuracy", "f1", "macro_f1")
        ctx.error(
            "FM0378",
            f"`{metric}` is not a metric this model's task reports",
            select.value.span,
            "not measured for this task",
            f"select by one of {', '.join(fits)}",
        )
    if setting(model.body, "train") is None:
        ctx.error(
            "FM0378",
            f"model `{model.name.name}` selects its base but trains nothing to compare",
            select.span,
            "no `train { }` block",
            "add a `train { data = ..., ... }` block: each candidate is trained, then compared",
        )
    if select.on is None:
        ctx.error(
            "FM0378",
            "`select by` names no split to compare the candidates on",
            select.span,
            "on which data?",
            f"add `on DATASET.SPLIT`: `select by {metric or 'accuracy'} on data.valid`",
        )
        return
    check_data_ref(ctx, select.on, "select", labels_ok=False)
    written = _dotted_text(select.on)
    evaluated = [_dotted_text(i) for i in _eval_on(model)]
    if written not in evaluated:
        ctx.error(
            "FM0378",
            f"`select by` compares on `{written}`, which the model does not evaluate",
            select.on.span,
            "not in `eval { on = [...] }`",
            f"add `{written}` to the model's `eval {{ on = [...] }}`",
        )


def _eval_on(model: ast.Block) -> tuple[ast.Expr, ...]:
    block = setting(model.body, "eval")
    on = setting_value(block.body, "on") if isinstance(block, ast.BlockSetting) else None
    if isinstance(on, ast.ListExpr):
        return on.items
    return (on,) if on is not None else ()


def _check_candidates(
    ctx: Ctx, model: ast.Block, candidates: ast.ListExpr, adapters: list[ast.Expr]
) -> None:
    seen: set[str] = set()
    for item in candidates.items:
        if not isinstance(item, ast.Name):
            continue  # the settings checker reported it
        if item.id in seen:
            ctx.error(
                "FM0373",
                f"base candidate `{item.id}` is listed twice",
                item.span,
                "again",
                "list each candidate once",
            )
        seen.add(item.id)
        symbol = ctx.lookup(item.id)
        if (
            symbol is not None
            and isinstance(symbol.node, ast.Block)
            and symbol.kind == "base_model"
        ):
            own: list[ast.Expr | None] = [setting_value(model.body, "adapter")]
            for adapter in adapters or own:
                if not _check_fits(ctx, model, item, symbol.node, adapter):
                    break


def _check_fits(
    ctx: Ctx, model: ast.Block, item: ast.Name, base: ast.Block, adapter: ast.Expr | None
) -> bool:
    """The candidate can do the model's task with the adapter (FM0375, by name)."""
    task = setting_value(model.body, "task")
    head = task.func if isinstance(task, ast.Call) else task
    kind = setting_value(base.body, "kind")
    if _is(head, "generate") and _is(kind, "encoder"):
        ctx.error(
            "FM0375",
            f"candidate `{item.id}` is an encoder and cannot `generate`",
            item.span,
            "cannot do this task",
            "remove it from the candidates, or list decoder base models",
        )
        return False
    modules = [n.id for n in _names(setting_value(base.body, "modules"))]
    if not modules or not isinstance(adapter, ast.Call):
        return True
    wanted = [
        n.id
        for a in adapter.args
        if a.name is not None and a.name.name in ("targets", "feedforward")
        for n in _names(a.value)
    ]
    missing = sorted({w for w in wanted if w not in modules})
    if missing:
        ctx.error(
            "FM0375",
            f"candidate `{item.id}` has no module "
            + ", ".join(f"`{m}`" for m in missing)
            + " for the adapter to wrap",
            item.span,
            "the adapter does not fit it",
            f"remove it from the candidates, or target modules every candidate has "
            f"(`{item.id}` has {', '.join(modules)})",
        )
    return True


def _check_merge(ctx: Ctx, block: ast.Block, selecting: set[str]) -> None:
    """A merge of a selection model (FM0379): the merge's compatibility (one base, one
    adapter kind, ranks) is proven statically, and the winner is known only after training."""
    for parent in _names(setting_value(block.body, "models")):
        if parent.id in selecting:
            ctx.error(
                "FM0379",
                f"cannot merge `{parent.id}` into `{block.name.name}`: its base is chosen only "
                "when `fmc run` trains its candidates",
                parent.span,
                "no single base to merge on",
                "a merge needs its parents on one base, checked before training; run "
                f"`fmc run` to select, then pin `{parent.id}`'s base to the winner (`fmc run` "
                "names it) and merge that",
            )


def _names(value: ast.Expr | None) -> list[ast.Name]:
    if isinstance(value, ast.ListExpr):
        return [i for i in value.items if isinstance(i, ast.Name)]
    return [value] if isinstance(value, ast.Name) else []


def _is(expr: ast.Expr | None, name: str) -> bool:
    return isinstance(expr, ast.Name) and expr.id == name


def _text(expr: ast.Expr) -> str:
    return expr.id if isinstance(expr, ast.Name) else "?"


def _dotted_text(expr: ast.Expr) -> str:
    parts = dotted(expr)
    return ".".join(p.name for p in parts) if parts else "?"
