"""Settings that nothing reads for this model, reported as warnings (FM0371) so that a spec
never says more than the build does. Each rule names what makes the setting ineffective:

- a training column the task does not read: `input`/`target` for `generate` (it reads
  `prompt` and `completion`), `prompt`/`completion` for `classify` and `embed`, `target` when
  the data is a labels block (the label model's probabilities are the targets);
- `epochs` beside `max_steps`, which transformers lets override it;
- `double_quant` when the model cannot be quantized to 4 bits (nf4, fp4);
- a fixed `sharding` other than `ddp` over one device without offloading: nothing to shard
  over (the executor treats it as a no-op, the verifier divides by one);
- `eval` on a model without `train`: only training runs evaluation;
- `new_tokens` outside `generate`, and `metrics` the task does not compute (`perplexity` for
  classifiers, classification metrics for `generate`, `latency`, which is measured for
  latency constraints, not by `metrics`);
- `max_adapters` and `max_lora_rank` where no adapter is loaded: `adapters merged`, or a
  model without a PEFT adapter (the verifier still budgets resident adapters for the first).
"""

from __future__ import annotations

from fmlang.check.context import Ctx
from fmlang.check.merge_parents import merged_parents
from fmlang.check.program import Program
from fmlang.check.settings import setting, setting_value
from fmlang.check.training import task_of, trains_on_labels
from fmlang.diagnostics import Span
from fmlang.syntax import ast

CLASSIFY_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1")
FOUR_BIT = ("nf4", "fp4")
SHARDED = ("zero1", "zero2", "zero3", "fsdp")
PEFT_ADAPTERS = ("lora", "dora", "ia3", "prefix", "prompt")


def check_effects(program: Program) -> None:
    for source in program.user_files():
        ctx = Ctx(program, source)
        for item in source.module.items:
            if isinstance(item, ast.Block) and item.kind == "model":
                _check_model(ctx, item)
            elif isinstance(item, ast.Block) and item.kind == "merge":
                parents = merged_parents(ctx, item)
                _check_eval(ctx, item, parents[0].task if parents else None)
            elif isinstance(item, ast.Block) and item.kind == "deploy":
                _check_deploy(ctx, item)


def _no_effect(ctx: Ctx, span: Span, message: str, why: str, fix: str) -> None:
    ctx.warn("FM0371", message, span, why, fix)


def _check_model(ctx: Ctx, model: ast.Block) -> None:
    name = model.name.name
    train = setting(model.body, "train")
    _check_double_quant(ctx, model)
    if isinstance(train, ast.BlockSetting):
        _check_columns(ctx, model, train)
        _check_schedule(ctx, name, train)
        _check_sharding(ctx, name, train)
        _check_eval(ctx, model, task_of(model))
        return
    evaluation = setting(model.body, "eval")
    if isinstance(evaluation, ast.BlockSetting) and setting(evaluation.body, "on") is not None:
        _no_effect(
            ctx,
            evaluation.key.span,
            f"`eval` has no effect: model `{name}` is never trained",
            "nothing evaluates it",
            "evaluation runs after training: add a `train` block, or remove `eval`",
        )


def _check_double_quant(ctx: Ctx, model: ast.Block) -> None:
    flag = setting_value(model.body, "double_quant")
    if not isinstance(flag, ast.Bool) or not flag.value:
        return
    quantize = setting_value(model.body, "quantize")
    possible = _choices(quantize, "none")
    if possible is None or any(q in FOUR_BIT for q in possible):
        return
    what = "is not quantized" if possible == ["none"] else f"is quantized {' or '.join(possible)}"
    _no_effect(
        ctx,
        flag.span,
        f"`double_quant` has no effect: model `{model.name.name}` {what}",
        "only 4-bit quantization has constants to quantize",
        "remove `double_quant`, or quantize to 4 bits (`quantize nf4`)",
    )


def _choices(value: ast.Expr | None, default: str) -> list[str] | None:
    """The names a setting may take: as written, the listed `auto in [...]` values, or None
    for a bare `auto` (any value)."""
    if value is None:
        return [default]
    if isinstance(value, ast.Name):
        return [value.id]
    if isinstance(value, ast.Auto) and isinstance(value.domain, ast.ListExpr):
        return [item.id for item in value.domain.items if isinstance(item, ast.Name)]
    return None


def _check_columns(ctx: Ctx, model: ast.Block, train: ast.BlockSetting) -> None:
    task = task_of(model)
    unread: dict[str, str] = {}
    if task == "generate":
        why = "`generate` trains on `prompt` and `completion`"
        unread = dict.fromkeys(("input", "target"), why)
    elif task in ("classify", "embed"):
        unread = dict.fromkeys(("prompt", "completion"), f"`{task}` trains on `input`")
        if trains_on_labels(ctx, train):
            unread["target"] = "a labels block's label model gives the targets"
    for key, why in unread.items():
        found = setting(train.body, key)
        if found is not None:
            _no_effect(
                ctx,
                found.key.span,
                f"`{key}` has no effect in model `{model.name.name}`: {why}",
                "not read",
                f"remove `{key}`",
            )


def _check_schedule(ctx: Ctx, name: str, train: ast.BlockSetting) -> None:
    epochs = setting(train.body, "epochs")
    if epochs is not None and setting(train.body, "max_steps") is not None:
        _no_effect(
            ctx,
            epochs.key.span,
            f"`epochs` has no effect in model `{name}`: `max_steps` decides the run's length",
            "overridden by `max_steps`",
            "remove `epochs`, or remove `max_steps` to train for whole epochs",
        )


def _check_sharding(ctx: Ctx, name: str, train: ast.BlockSetting) -> None:
    sharding = setting_value(train.body, "sharding")
    devices = setting_value(train.body, "devices")
    offload = _choices(setting_value(train.body, "offload"), "none")
    one = devices is None or (isinstance(devices, ast.Number) and devices.value <= 1)
    if isinstance(sharding, ast.Name) and sharding.id in SHARDED and one and offload == ["none"]:
        _no_effect(
            ctx,
            sharding.span,
            f"`sharding = {sharding.id}` has no effect in model `{name}`: it trains on one device",
            "nothing to shard over",
            "remove `sharding`, or train on several devices (`devices = 4`)",
        )


def _check_eval(ctx: Ctx, block: ast.Block, task: str | None) -> None:
    found = setting(block.body, "eval")
    if not isinstance(found, ast.BlockSetting) or task is None:
        return
    where = f"{block.kind} `{block.name.name}`"
    new_tokens = setting(found.body, "new_tokens")
    if new_tokens is not None and task != "generate":
        _no_effect(
            ctx,
            new_tokens.key.span,
            f"`new_tokens` has no effect in {where}: a `{task}` model generates nothing",
            "nothing is generated",
            "remove `new_tokens`",
        )
    metrics = setting_value(found.body, "metrics")
    items = metrics.items if isinstance(metrics, ast.ListExpr) else (metrics,) if metrics else ()
    for item in items:
        why = _uncomputed(item.id, task) if isinstance(item, ast.Name) else None
        if isinstance(item, ast.Name) and why is not None:
            _no_effect(
                ctx,
                item.span,
                f"`{item.id}` is not measured for {where}: {why}",
                "not computed",
                f"remove `{item.id}` from `metrics`",
            )


def _uncomputed(metric: str, task: str) -> str | None:
    if metric == "latency":
        return "latency is measured for each `latency` constraint on a CPU profile"
    if metric == "perplexity" and task != "generate":
        return f"a `{task}` model has no token loss"
    if metric in CLASSIFY_METRICS and task == "generate":
        return "a `generate` model is evaluated by its perplexity"
    return None


def _check_deploy(ctx: Ctx, deploy: ast.Block) -> None:
    merged = setting_value(deploy.body, "adapters")
    why = "`adapters merged` loads no adapter" if _named(merged, "merged") else None
    symbol = ctx.lookup(deploy.name.name)
    model = symbol.node if symbol is not None and symbol.kind == "model" else None
    if why is None and isinstance(model, ast.Block) and _adapter_kind(model) not in PEFT_ADAPTERS:
        why = f"model `{model.name.name}` has no adapter to load"
    if why is None:
        return
    resident = setting(deploy.body, "max_adapters")
    kserve = setting(deploy.body, "kserve")
    rank = setting(kserve.body, "max_lora_rank") if isinstance(kserve, ast.BlockSetting) else None
    for found in (resident, rank):
        if found is not None:
            _no_effect(
                ctx,
                found.key.span,
                f"`{found.key.name}` has no effect in deploy `{deploy.name.name}`: {why}",
                "no adapter is loaded",
                f"remove `{found.key.name}`",
            )


def _named(value: ast.Expr | None, name: str) -> bool:
    return isinstance(value, ast.Name) and value.id == name


def _adapter_kind(model: ast.Block) -> str | None:
    adapter = setting_value(model.body, "adapter")
    head = adapter.func if isinstance(adapter, ast.Call) else adapter
    return head.id if isinstance(head, ast.Name) else None
