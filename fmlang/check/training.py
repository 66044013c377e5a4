"""What a training job cannot run without, refused before the build instead of at run time:

- a `train` block without `data` (FM0337): the build has no job to write (FM0805);
- a `dp` block without `epsilon` (FM0338): the run refuses (FM0837), and the verifier would
  already count the model as private;
- settings DP-SGD cannot honour beside a `dp` block (FM0828, the code `fmc run` would refuse
  with): `packing`, `chunked_loss`, activation `checkpointing`, `optimizer_in_backward`,
  `precision = fp16`, `compile`, and several devices (left `auto`, the verifier only offers
  `checkpointing = off`);
- the columns the task reads (FM0372, a warning: specs that are only verified, never run,
  may leave them out): a classifier (and an embedding model, which the executor trains the
  same way) reads `input`, and `target` unless it trains on a labels block; a generative
  model reads `prompt` and `completion`.
"""

from __future__ import annotations

from fmlang.check.context import Ctx, dotted
from fmlang.check.program import Program
from fmlang.check.settings import setting, setting_value
from fmlang.syntax import ast


def check_training(program: Program) -> None:
    for source, symbol in program.declarations("model"):
        assert isinstance(symbol.node, ast.Block)
        train = setting(symbol.node.body, "train")
        if isinstance(train, ast.BlockSetting):
            _check_train(Ctx(program, source), symbol.node, train)


def task_of(model: ast.Block) -> str | None:
    """The head of the model's `task` (`classify`, `generate`, `embed`), if written."""
    task = setting_value(model.body, "task")
    head = task.func if isinstance(task, ast.Call) else task
    return head.id if isinstance(head, ast.Name) else None


def trains_on_labels(ctx: Ctx, train: ast.BlockSetting) -> bool:
    """Whether `data` names a labels block (the model trains on its label model's output)."""
    data = setting_value(train.body, "data")
    parts = dotted(data) if data is not None else None
    symbol = ctx.lookup(parts[0].name) if parts else None
    return symbol is not None and symbol.kind == "labels"


def needed_columns(ctx: Ctx, model: ast.Block, train: ast.BlockSetting) -> tuple[str, ...]:
    """The train settings naming the columns the executor reads for the model's task."""
    task = task_of(model)
    if task == "generate":
        return ("prompt", "completion")
    if task is None:
        return ()
    return ("input",) if trains_on_labels(ctx, train) else ("input", "target")


def _check_train(ctx: Ctx, model: ast.Block, train: ast.BlockSetting) -> None:
    name = model.name.name
    dp = setting(train.body, "dp")
    if isinstance(dp, ast.BlockSetting) and setting(dp.body, "epsilon") is None:
        ctx.error(
            "FM0338",
            f"`dp` in model `{name}` has no `epsilon`",
            dp.key.span,
            "DP-SGD without a privacy budget",
            "add `epsilon = 8` (the budget the noise is calibrated to), or remove the block",
        )
    if isinstance(dp, ast.BlockSetting):
        _check_private(ctx, name, train)
    if setting(train.body, "data") is None:
        ctx.error(
            "FM0337",
            f"model `{name}` has a `train` block but no training `data`",
            train.key.span,
            "trains on nothing",
            "add `data = dataset.split` (or a labels block) and the columns its task reads, "
            "or remove the train block",
        )
        return
    missing = [key for key in needed_columns(ctx, model, train) if setting(train.body, key) is None]
    if missing:
        names = " and ".join(f"`{key}`" for key in missing)
        ctx.warn(
            "FM0372",
            f"training `{name}` ({task_of(model)}) reads {names}, which the train block "
            "does not name: `fmc run` cannot train it",
            train.key.span,
            "the columns to train on",
            "add " + ", ".join(f"`{key} = COLUMN`" for key in missing) + " to the train block",
        )


# (setting, a written value DP-SGD cannot train with, why, the fix)
DP_CONFLICTS: tuple[tuple[str, object, str, str], ...] = (
    ("packing", True, "a packed row mixes several examples", "remove `packing = true`"),
    ("chunked_loss", True, "the chunked loss has no per-example gradient",
     "remove `chunked_loss = true`"),
    ("checkpointing", "selective", "recomputed activations have no per-example gradient hooks",
     "set `checkpointing = off`"),
    ("checkpointing", "full", "recomputed activations have no per-example gradient hooks",
     "set `checkpointing = off`"),
    ("checkpointing", "offload", "recomputed activations have no per-example gradient hooks",
     "set `checkpointing = off`"),
    ("optimizer_in_backward", True, "each step must see every clipped, noised gradient",
     "remove `optimizer_in_backward = true`"),
    ("precision", "fp16", "fp16 loss scaling breaks the clipping bound",
     "use `precision = bf16` or `fp32`"),
    ("compile", True, "opacus' hooks do not survive compilation", "remove `compile = true`"),
)  # fmt: skip


def _literal(value: object) -> object:
    if isinstance(value, ast.Bool):
        return value.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Number):
        return value.value
    return None


def _check_private(ctx: Ctx, name: str, train: ast.BlockSetting) -> None:
    """What `fmc run` would refuse a DP-SGD job for (FM0828), refused here instead."""
    for key, bad, why, fix in DP_CONFLICTS:
        found = setting(train.body, key)
        if isinstance(found, ast.Setting) and _literal(found.value) == bad:
            ctx.error("FM0828", f"DP-SGD cannot train `{name}` with `{key} = {_show(bad)}`: {why}",
                      found.span, "conflicts with the `dp` block", fix)  # fmt: skip
    devices = setting(train.body, "devices")
    count = _literal(devices.value) if isinstance(devices, ast.Setting) else None
    if isinstance(count, float) and count > 1 and devices is not None:
        message = f"DP-SGD cannot train `{name}` on {int(count)} devices: one process only"
        ctx.error("FM0828", message, devices.span, "conflicts with the `dp` block",
                  "train on one device (`devices = 1`)")  # fmt: skip


def _show(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
