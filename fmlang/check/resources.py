"""Facts the cost model needs and knob combinations that cannot run, refused before any
verdict: a hardware profile without memory, bandwidth or peak compute (FM0335); a base
model without the architecture facts every estimate starts from (FM0339); a length
beyond the base model's (FM0333); full fine-tuning of a quantized base (FM0334); a packed or
chunked loss on a task that has no token loss (FM0336)."""

from __future__ import annotations

from fmlang.check.context import Ctx
from fmlang.check.models import base_block
from fmlang.check.program import Program, Symbol
from fmlang.check.settings import setting, setting_value
from fmlang.syntax import ast

REQUIRED_FACTS = ("memory", "bandwidth")
PEAKS = ("peak_fp32", "peak_bf16")
# What `costmodel.Arch.of` would otherwise guess (0 parameters, one layer, hidden 768, ...).
ARCHITECTURE_FACTS = ("kind", "params", "layers", "hidden", "heads", "vocab")


def check_resources(program: Program) -> None:
    for source, symbol in program.declarations("hardware"):
        assert isinstance(symbol.node, ast.Block)
        _check_profile(Ctx(program, source), symbol.node)
    for source, symbol in program.declarations("base_model"):
        assert isinstance(symbol.node, ast.Block)
        _check_architecture(Ctx(program, source), symbol.node)
    for source, symbol in program.declarations("model"):
        assert isinstance(symbol.node, ast.Block)
        ctx = Ctx(program, source)
        _check_lengths(ctx, symbol.node)
        _check_quantized_full(ctx, symbol.node)
        _check_token_loss(ctx, symbol.node)
    for source in program.user_files():
        ctx = Ctx(program, source)
        for item in source.module.items:
            if isinstance(item, ast.Block) and item.kind == "deploy":
                _check_served_length(ctx, item)


def _check_profile(ctx: Ctx, node: ast.Block) -> None:
    """The cost model never guesses a device: each fact it reads must be written."""
    missing = [k for k in REQUIRED_FACTS if setting(node.body, k) is None]
    if all(setting(node.body, k) is None for k in PEAKS):
        missing.append("peak_fp32 or peak_bf16")
    if missing:
        ctx.error(
            "FM0335",
            f"hardware `{node.name.name}` has no {', '.join(missing)}",
            node.name.span,
            "incomplete profile",
            "add them from the device's datasheet (memory as the device reports it, e.g. "
            "`memory 81559MiB`, `bandwidth 3.35TB/s`, `peak_bf16 989TFLOPS`)",
        )


def _check_architecture(ctx: Ctx, node: ast.Block) -> None:
    """A base model's architecture is stated, never guessed."""
    missing = [k for k in ARCHITECTURE_FACTS if setting(node.body, k) is None]
    if missing:
        ctx.error(
            "FM0339",
            f"base model `{node.name.name}` has no {', '.join(f'`{k}`' for k in missing)}",
            node.name.span,
            "incomplete architecture",
            "copy them from the model's config.json (`num_hidden_layers` is `layers`, "
            "`hidden_size` `hidden`, `num_attention_heads` `heads`, `vocab_size` `vocab`)",
        )


def _number(value: ast.Expr | None) -> float | None:
    if isinstance(value, ast.Number):
        return value.value
    if isinstance(value, ast.Auto) and isinstance(value.domain, ast.Range):
        high = value.domain.high
        return high.value if isinstance(high, ast.Number) else None
    if isinstance(value, ast.Auto) and isinstance(value.domain, ast.ListExpr):
        numbers = [i.value for i in value.domain.items if isinstance(i, ast.Number)]
        return max(numbers) if numbers else None
    return None


def _check_lengths(ctx: Ctx, model: ast.Block) -> None:
    train = setting(model.body, "train")
    candidates = [("max_seq", setting(model.body, "max_seq"))]
    if isinstance(train, ast.BlockSetting):
        candidates.append(("seq_len", setting(train.body, "seq_len")))
    _check_within_base(ctx, model, candidates)


def _check_served_length(ctx: Ctx, deploy: ast.Block) -> None:
    """A deployment's `max_seq` is bounded by the base model of what it serves (a merge's
    models share one base: FM0342). Each name resolves in the file that writes it."""
    symbol = ctx.lookup(deploy.name.name)
    if symbol is not None and symbol.kind == "merge" and isinstance(symbol.node, ast.Block):
        models = setting_value(symbol.node.body, "models")
        first = models.items[0] if isinstance(models, ast.ListExpr) and models.items else None
        home = _home(ctx, symbol)
        symbol = home.lookup(first.id) if isinstance(first, ast.Name) else None
    if symbol is not None and symbol.kind == "model" and isinstance(symbol.node, ast.Block):
        found = setting(deploy.body, "max_seq")
        _check_within_base(_home(ctx, symbol), symbol.node, [("max_seq", found)])


def _home(ctx: Ctx, symbol: Symbol) -> Ctx:
    """A context for the file that declares `symbol`."""
    return Ctx(ctx.program, ctx.program.files[symbol.file])


def _check_within_base(
    ctx: Ctx, model: ast.Block, candidates: list[tuple[str, ast.Setting | ast.BlockSetting | None]]
) -> None:
    """FM0333: a length written beyond the positions of the model's base."""
    base = base_block(ctx, model)
    limit = _number(setting_value(base.body, "max_seq")) if base is not None else None
    if base is None or limit is None:
        return
    for key, found in candidates:
        value = found.value if isinstance(found, ast.Setting) else None
        length = _number(value)
        if value is not None and length is not None and length > limit:
            ctx.error(
                "FM0333",
                f"`{key}` of {length:g} tokens is beyond `{base.name.name}`'s {limit:g}",
                value.span,
                "longer than the base model's positions",
                f"use at most {limit:g} (the base's `max_seq`)",
            )


def _check_quantized_full(ctx: Ctx, model: ast.Block) -> None:
    adapter = setting_value(model.body, "adapter")
    quantize = setting_value(model.body, "quantize")
    full = isinstance(adapter, ast.Name) and adapter.id == "full"
    if full and isinstance(quantize, ast.Name) and quantize.id != "none":
        ctx.error(
            "FM0334",
            f"model `{model.name.name}` fine-tunes every weight of a `{quantize.id}` base",
            quantize.span,
            "quantized weights cannot train",
            "train an adapter on the quantized base (`adapter lora(…)`, QLoRA) or drop `quantize`",
        )


def _check_token_loss(ctx: Ctx, model: ast.Block) -> None:
    task = setting_value(model.body, "task")
    head = task.func if isinstance(task, ast.Call) else task
    train = setting(model.body, "train")
    if not isinstance(head, ast.Name) or head.id == "generate":
        return
    if not isinstance(train, ast.BlockSetting):
        return
    for key in ("packing", "chunked_loss"):
        value = setting_value(train.body, key)
        if isinstance(value, ast.Bool) and value.value:
            ctx.error(
                "FM0336",
                f"`{key}` needs a `generate` task; `{model.name.name}` does `{head.id}`",
                value.span,
                "no token-level loss to pack or chunk",
                f"remove `{key}`",
            )
