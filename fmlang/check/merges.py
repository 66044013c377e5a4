"""Merges: the block's own settings, and whether its models can be merged at all.

The merge executor (`fmlang.backends.merge`) refuses, after both parents have trained, what
peft cannot merge: adapters that are not LoRA (DoRA, IA3, prefix, prompt, full fine-tuning,
none), different base weights, different target modules, different ranks for the methods
that keep the parents' common rank (`SAME_RANK_METHODS`), and classification heads, which
every classifier trains in full. Each of these is known from the spec, so it is refused here,
before anything trains, at the merge's entry for the odd model with a label on the setting
that makes it odd. Models of different tasks are refused too: the merged adapter would have
no one task to be loaded, evaluated and served for.

A rank the solver chooses (`rank = auto in [8, 16]`) is not compared here: the verifier ties
the parents' rank knobs together for these methods (`fmlang.verify.policy`).
"""

from __future__ import annotations

from collections.abc import Callable

from fmlang.check import schema as s
from fmlang.check.context import Ctx
from fmlang.check.datasets import check_grant
from fmlang.check.fisher import all_sparse, check_sparse_merge
from fmlang.check.merge_parents import Parent, merged_parents
from fmlang.check.program import Program
from fmlang.check.settings import check_body, setting, setting_value
from fmlang.diagnostics import Diagnostic, Label, error
from fmlang.syntax import ast

# Why each adapter kind other than LoRA cannot be merged (the executor's FM0844).
UNMERGEABLE = {
    "dora": "DoRA's magnitude vectors do not combine by these methods",
    "ia3": "IA3 rescales activations: it has no low-rank weight update to combine",
    "prefix": "prefix tuning learns virtual tokens, not a weight update",
    "prompt": "prompt tuning learns a soft prompt, not a weight update",
    "full": "full fine-tuning leaves no adapter: every weight of the model changed",
    "fisher_mask": "a fisher_mask update is a sparse diff of the base: it merges only with "
    "other fisher_mask models",
    None: "it has no adapter to merge",
}


def check_merges(program: Program) -> None:
    for source, symbol in program.declarations("merge"):
        assert isinstance(symbol.node, ast.Block)
        ctx = Ctx(program, source)
        _check_merge(ctx, symbol.node)
        check_compatible(ctx, symbol.node)


def _check_merge(ctx: Ctx, merge: ast.Block) -> None:
    name = merge.name.name
    check_body(ctx, merge.body, s.MERGE, f"merge `{name}`")
    models = setting_value(merge.body, "models")
    count = len(models.items) if isinstance(models, ast.ListExpr) else None
    if models is None:
        ctx.error(
            "FM0340",
            f"merge `{name}` names no models",
            merge.name.span,
            "nothing to merge",
            "add `models [model_a, model_b]`",
        )
    elif count is not None and count < 2:
        ctx.error("FM0340", "a merge combines at least two models", models.span, "too few")
    if setting(merge.body, "method") is None:
        ctx.error(
            "FM0340",
            f"merge `{name}` has no `method`",
            merge.name.span,
            "no method",
            "add `method linear` (or ties, dare_ties, dare_linear, svd, cat, ...)",
        )
    weights = setting_value(merge.body, "weights")
    if isinstance(weights, ast.ListExpr) and count is not None and len(weights.items) != count:
        ctx.error(
            "FM0341",
            f"{len(weights.items)} weights for {count} models",
            weights.span,
            "one weight per model",
            "give exactly one weight for each model, in order",
        )
    for stmt in merge.body:
        if isinstance(stmt, ast.Grant):
            check_grant(ctx, stmt)


# ---- compatibility ------------------------------------------------------------------


def check_compatible(ctx: Ctx, merge: ast.Block) -> None:
    """Every reason the executor would refuse to merge these models, at once."""
    parents = merged_parents(ctx, merge)
    if all_sparse([p.adapter for p in parents]):  # fisher_mask diffs merge as sparse diffs
        check_sparse_merge(ctx, merge)
    else:
        for parent in parents:
            if parent.adapter != "lora":
                ctx.report(_unmergeable(merge, parent))
    _check_tasks(ctx, merge, parents)
    _check_bases(ctx, merge, parents)
    loras = [p for p in parents if p.adapter == "lora"]  # targets and ranks are LoRA's
    _check_targets(ctx, merge, loras)
    _check_ranks(ctx, merge, loras)


def _method(merge: ast.Block) -> tuple[str | None, ast.Setting | ast.BlockSetting | None]:
    found = setting(merge.body, "method")
    value = found.value if isinstance(found, ast.Setting) else None
    head = value.func if isinstance(value, ast.Call) else value
    return (head.id if isinstance(head, ast.Name) else None), found


def _refusal(
    code: str,
    merge: ast.Block,
    parent: Parent,
    message: str,
    labels: list[Label],
    help: str,
    notes: tuple[str, ...] = (),
) -> Diagnostic:
    """A refusal at the merge's entry for `parent`, labelling the settings it compares."""
    return error(
        code,
        f"cannot merge `{merge.name.name}`: {message}",
        parent.ref.span,
        f"`{parent.name}` is merged here",
        help=help,
        notes=notes,
        related=tuple(labels),
    )


def _unmergeable(merge: ast.Block, parent: Parent) -> Diagnostic:
    kind = _adapter_phrase(parent.adapter)
    return _refusal(
        "FM0343",
        merge,
        parent,
        f"`{parent.name}` {kind}, and only LoRA adapters can be merged",
        [Label(parent.adapter_span, f"`{parent.name}` {kind}", False)],
        f"give `{parent.name}` `adapter lora(...)` with the other models' targets and rank, "
        "or serve the models side by side instead of merging them",
        (UNMERGEABLE.get(parent.adapter, UNMERGEABLE[None]),),
    )


def _adapter_phrase(adapter: str | None) -> str:
    if adapter is None:
        return "has no adapter"
    if adapter == "full":
        return "is fully fine-tuned (`adapter full`)"
    return f"has {'an' if adapter[0] in 'aeiou' else 'a'} `{adapter}` adapter"


def _check_tasks(ctx: Ctx, merge: ast.Block, parents: list[Parent]) -> None:
    known = [p for p in parents if p.task is not None]
    if not known:
        return
    first = known[0]
    for other in known[1:]:
        if other.task != first.task:
            ctx.report(
                _refusal(
                    "FM0346",
                    merge,
                    other,
                    f"`{other.name}` does `{other.task}` but `{first.name}` does `{first.task}`",
                    _pair(first, other, "task_span", lambda p: f"`{p.name}` does `{p.task}`"),
                    "merge models of one task; the merged adapter is loaded, evaluated and "
                    "served for that task",
                )
            )
    classifiers = [p for p in known if p.task == "classify"]
    if len(classifiers) > 1 and all(p.task == "classify" for p in known):
        ctx.report(_classifiers(merge, classifiers))


def _classifiers(merge: ast.Block, classifiers: list[Parent]) -> Diagnostic:
    """Every classifier trains its head in full (peft's `modules_to_save`)."""
    last = classifiers[-1]
    names = ", ".join(f"`{p.name}`" for p in classifiers[:-1]) + f" and `{last.name}`"
    return _refusal(
        "FM0346",
        merge,
        last,
        f"{names} are classifiers, and each trains its own classification head in full",
        [Label(p.task_span, f"`{p.name}` classifies", False) for p in classifiers],
        "merge generative or embedding models, or train one classifier on the data of both "
        "(a labels block over the union of their classes)",
        (
            *(f"`{p.name}` classifies into [{', '.join(p.classes)}]" for p in classifiers),
            "a whole trained head has no low-rank update to combine",
        ),
    )


def _pair(
    first: Parent, other: Parent, attribute: str, text: Callable[[Parent], str]
) -> list[Label]:
    """Labels on the same setting of both models: the odd one's, then the first's."""
    return [
        Label(getattr(other, attribute), text(other), False),
        Label(getattr(first, attribute), text(first), False),
    ]


def _check_bases(ctx: Ctx, merge: ast.Block, parents: list[Parent]) -> None:
    known = [p for p in parents if p.base is not None]
    if not known:
        return
    first = known[0]
    assert first.base is not None
    for other in known[1:]:
        assert other.base is not None
        if other.base.identity == first.base.identity:
            continue
        ctx.report(
            _refusal(
                "FM0342",
                merge,
                other,
                f"`{other.name}` adapts `{other.base.name}` but `{first.name}` adapts "
                f"`{first.base.name}`",
                _pair(first, other, "base_span", _adapts),
                f"train every merged model on one base model (for example `base "
                f"{first.base.name}`), or merge only the models that share one",
                _why_not_interchangeable(first, other),
            )
        )


def _adapts(parent: Parent) -> str:
    assert parent.base is not None
    return f"`{parent.name}` adapts {parent.base.shows}"


def _why_not_interchangeable(first: Parent, other: Parent) -> tuple[str, ...]:
    """A LoRA update is a change to the weights it was trained against: even two bases with
    one tokenizer (the same vocabulary, so the same token ids) are not interchangeable."""
    a, b = first.base, other.base
    assert a is not None and b is not None
    why = "an adapter's update only means something on the weights it was trained against"
    if a.vocab is not None and b.vocab is not None and a.vocab != b.vocab:
        vocabularies = f"vocabulary {a.vocab} against {b.vocab}"
        return (f"{a.shows} and {b.shows} do not even share a tokenizer ({vocabularies})",)
    if a.vocab is None or a.vocab != b.vocab or (a.family and a.family != b.family):
        return (f"{a.shows} and {b.shows} are different weights: {why}",)
    family = f"{a.family}, " if a.family else ""
    shared = f"`{a.name}` and `{b.name}` share a tokenizer ({family}vocabulary {a.vocab})"
    if (a.hidden, a.layers) != (b.hidden, b.layers):
        shapes = f"hidden {a.hidden} x {a.layers} layers against {b.hidden} x {b.layers}"
        return (f"{shared}, but their layers differ ({shapes}): the updates do not line up",)
    return (f"{shared} and layer shapes, but not weights: {why}",)


def _check_targets(ctx: Ctx, merge: ast.Block, loras: list[Parent]) -> None:
    if not loras:
        return
    first = loras[0]
    for other in loras[1:]:
        if other.targets == first.targets:
            continue
        ctx.report(
            _refusal(
                "FM0344",
                merge,
                other,
                f"`{other.name}` targets {_modules(other)} but `{first.name}` targets "
                f"{_modules(first)}",
                _pair(first, other, "targets_span", lambda p: f"`{p.name}` targets {_modules(p)}"),
                f"give every merged model the same `targets = [{', '.join(first.targets)}]`",
                (
                    "a merge adds the updates module by module: a module one adapter wraps "
                    "and the other does not has nothing to combine with",
                ),
            )
        )


def _modules(parent: Parent) -> str:
    return ", ".join(parent.targets) if parent.targets else "no modules"


def _check_ranks(ctx: Ctx, merge: ast.Block, loras: list[Parent]) -> None:
    method, method_setting = _method(merge)
    fixed = [p for p in loras if p.rank is not None]
    if method not in s.SAME_RANK_METHODS or method_setting is None or not fixed:
        return
    first = fixed[0]
    for other in fixed[1:]:
        if other.rank == first.rank:
            continue
        labels = _pair(first, other, "rank_span", lambda p: f"`{p.name}` has rank {p.rank}")
        labels.append(Label(method_setting.span, f"`{method}` keeps one rank", False))
        ctx.report(
            _refusal(
                "FM0345",
                merge,
                other,
                f"`{other.name}` has rank {other.rank} but `{first.name}` has rank "
                f"{first.rank}, and `{method}` needs one rank",
                labels,
                f"give every merged model `rank = {first.rank}`, or merge with `cat` (the "
                "ranks add up) or `svd(rank = N)`, which accept different ranks",
                (f"`{method}` makes an adapter of the models' common rank",),
            )
        )
