"""`adapter fisher_mask(density = 0.5%)`: what the settings table cannot say on its own.

FishMask (Sung et al. 2021, "Training Neural Networks with Fixed Sparse Masks") trains the
`density` fraction of the base model's parameters with the largest empirical Fisher
information and leaves the rest as they are. The table (`schema.ADAPTERS`) checks that a
written density lies in (0, 100%]; this pass adds:

- FM0355: the density is missing (there is no sensible default: it is the whole method);
- FM0356: the density selects no parameter at all of this base (`density x params < 1`);
- FM0357: the model is deployed: the server loads PEFT adapters, and a sparse diff is not one;
- FM0358: a merge of fisher_mask models by anything but `ties` (without `density`), the one
  rule the sparse merge implements (`backends/train/fisher.py`, `merge_diffs`);
- FM0359: a training setting the FishMask loop does not implement (`UNSUPPORTED_TRAIN`).

The parameters counted are every parameter of the base model (`params` of its base_model
block: embeddings included, as in the paper); the classification head of a `classify` model
is new, so it trains in full beside the mask, as it does beside every adapter.
"""

from __future__ import annotations

from fmlang.check.context import Ctx
from fmlang.check.settings import setting, setting_value
from fmlang.diagnostics import Label, error
from fmlang.syntax import ast

KIND = "fisher_mask"


def fisher_adapter(model: ast.Block) -> ast.Call | None:
    """The model's `adapter fisher_mask(...)` call, if that is its adapter."""
    value = setting_value(model.body, "adapter")
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return value if value.func.id == KIND else None
    if isinstance(value, ast.Name) and value.id == KIND:
        return ast.Call(func=value, args=(), span=value.span)
    return None


def _argument(call: ast.Call, name: str) -> ast.Expr | None:
    for arg in call.args:
        if arg.name is not None and arg.name.name == name:
            return arg.value
    return None


def _fraction(value: ast.Expr | None) -> float | None:
    if isinstance(value, ast.Quantity) and value.unit == "%":
        return value.value / 100
    if isinstance(value, ast.Number):
        return value.value
    return None


def check_fisher_mask(ctx: Ctx, model: ast.Block, base: ast.Block | None) -> None:
    """FM0355 and FM0356 for a model whose adapter is `fisher_mask`."""
    call = fisher_adapter(model)
    if call is None:
        return
    density = _argument(call, "density")
    if density is None:
        ctx.error(
            "FM0355",
            f"the fisher_mask adapter of `{model.name.name}` has no `density`",
            call.span,
            "how many parameters train?",
            "add the fraction of the base model's parameters that trains: "
            "`adapter fisher_mask(density = 0.5%)`",
        )
        return
    fraction = _fraction(density)
    params = setting_value(base.body, "params") if base is not None else None
    if fraction is None or not isinstance(params, ast.Number) or not 0 < fraction <= 1:
        return
    if fraction * params.value < 1:
        assert base is not None
        least = 100 / params.value
        ctx.error(
            "FM0356",
            f"a density of {density_text(fraction)} trains no parameter of "
            f"`{base.name.name}` ({params.value:,.0f} parameters)",
            density.span,
            "selects fewer than one parameter",
            f"raise the density to at least {least:.2g}%",
        )


# Training settings the FishMask loop (`backends/train/fisher_train.py`) does not implement,
# with the values that are what it does anyway (None: none is).
UNSUPPORTED_TRAIN: dict[str, tuple[str, ...] | None] = {
    "optimizer": ("adamw", "adamw_fused"),
    "optimizer_in_backward": ("false",),
    "precision": None,
    "master_weights": ("fp32",),
    "checkpointing": ("off",),
    "packing": ("false",),
    "chunked_loss": ("false",),
    "sharding": ("ddp",),
    "offload": ("none",),
    "compile": ("false",),
    "checkpoint_every": None,
    "devices": ("1",),
    "dp": None,
}
UNSUPPORTED_MODEL: dict[str, tuple[str, ...] | None] = {
    "quantize": ("none",),
    "double_quant": ("false",),
}


def _written(value: ast.Expr | None) -> str | None:
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Number):
        return value.text
    if isinstance(value, ast.Bool):
        return str(value.value).lower()
    return None


def check_training_settings(ctx: Ctx, model: ast.Block) -> None:
    """FM0359: a setting of the model or its `train { }` block that the fisher_mask loop
    does not implement (it trains with AdamW, no checkpointing, on one device, in the
    weights' own dtype, without DP-SGD or quantization)."""
    if fisher_adapter(model) is None:
        return
    train = setting(model.body, "train")
    places = [(model.body, UNSUPPORTED_MODEL)]
    if isinstance(train, ast.BlockSetting):
        places.append((train.body, UNSUPPORTED_TRAIN))
    for body, table in places:
        for key, allowed in table.items():
            found = setting(body, key)
            if found is None:
                continue
            value = found.value if isinstance(found, ast.Setting) else None
            if allowed is not None and _written(value) in allowed:
                continue
            ctx.error(
                "FM0359",
                f"the fisher_mask adapter of `{model.name.name}` does not support `{key}`",
                found.span,
                "not implemented for fisher_mask",
                f"remove `{key}`: fisher_mask trains with AdamW, without checkpoints, on one "
                "device, in the base weights' dtype, without DP-SGD or quantization",
            )


def density_text(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def check_not_deployed(ctx: Ctx, deploy: ast.Block, model: ast.Block) -> None:
    """FM0357: the serving runtimes load a base and PEFT adapters; a fisher_mask model is a
    sparse diff of the base's own weights, which none of them loads."""
    call = fisher_adapter(model)
    if call is None:
        return
    ctx.report(
        error(
            "FM0357",
            f"deploy `{deploy.name.name}` cannot serve `{model.name.name}`: its fisher_mask "
            "update is a sparse diff of the base weights, and the servers load PEFT adapters",
            deploy.name.span,
            "not servable",
            help="deploy a model with a LoRA adapter; `fmc run` still trains and evaluates "
            f"`{model.name.name}` (applying the diff to the base)",
            related=(Label(call.span, "the fisher_mask adapter", False),),
        )
    )


SPARSE_MERGE_METHOD = "ties"


def all_sparse(adapters: list[str | None]) -> bool:
    """Whether every merged model is a fisher_mask model (then they merge as sparse diffs)."""
    return bool(adapters) and all(a == KIND for a in adapters)


def check_sparse_merge(ctx: Ctx, merge: ast.Block) -> None:
    """FM0358: fisher_mask diffs merge by `ties` only -- added exactly where they do not
    overlap, the elected sign's values averaged where they do -- and, being sparse already,
    without TIES' own trimming (`density`)."""
    found = setting_value(merge.body, "method")
    head = found.func if isinstance(found, ast.Call) else found
    if not isinstance(head, ast.Name):
        return
    trims = isinstance(found, ast.Call) and any(
        a.name is not None and a.name.name == "density" for a in found.args
    )
    if head.id == SPARSE_MERGE_METHOD and not trims:
        return
    assert found is not None
    what = "trims them by `density`" if trims else f"is `{head.id}`"
    ctx.error(
        "FM0358",
        f"merge `{merge.name.name}` combines fisher_mask models, whose updates are sparse "
        f"diffs, and its method {what}",
        found.span,
        "sparse diffs merge by `ties` alone",
        "write `method ties`: the diffs add exactly where they do not overlap, and where they "
        "do the sign with the larger summed magnitude wins and its values are averaged",
    )
