"""The training knobs that move memory, resolved for the executor.

`memory_settings` turns a model's `train { }` knobs (and its `quantize`/`double_quant`) into
one JSON-ready dict, `TrainingPlan.memory`, with the verifier's defaults and its choices for
what the spec left `auto` (knobs `<model>.train.optimizer`, `.checkpointing`, `.sharding`,
`.offload`, `<model>.quantize`), so the run trains with exactly what was budgeted.
`memory_arguments` is the part transformers' `TrainingArguments` supports natively.
"""

from __future__ import annotations

from typing import Any

from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import Model, PretrainedModel, Training
from fmlang.lower.adapters import KnobValues, str_knob
from fmlang.verify.train_fit import master_weights_of, weights_dtype_of

TOKEN_LOSS_KNOBS = ("packing", "chunked_loss")


def memory_settings(
    model: Model, training: Training, base: PretrainedModel, knobs: KnobValues
) -> dict[str, Any]:
    """Every memory knob, resolved; FM0808 for a token-loss knob on a non-generative task."""
    _refuse_token_loss_knobs(model, training)
    name = model.name
    return {
        "weights_dtype": weights_dtype_of(training, base),
        "master_weights": master_weights_of(model, training, base),
        "optimizer": str_knob(training.optimizer, f"{name}.train.optimizer", knobs, "adamw"),
        "optimizer_in_backward": bool(training.optimizer_in_backward),
        "checkpointing": str_knob(
            training.checkpointing, f"{name}.train.checkpointing", knobs, "off"
        ),
        "attention": training.attention,
        "packing": bool(training.packing),
        "chunked_loss": bool(training.chunked_loss),
        "sharding": str_knob(training.sharding, f"{name}.train.sharding", knobs, "ddp"),
        "offload": str_knob(training.offload, f"{name}.train.offload", knobs, "none"),
        "compile": bool(training.compile),
        "quantize": str_knob(model.quantize, f"{name}.quantize", knobs, "none"),
        "double_quant": bool(model.double_quant),
    }


def memory_arguments(memory: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments keywords for what transformers does itself: gradient
    checkpointing (non-reentrant, which needs no input gradients under peft), torch.compile,
    and no gradient clipping when each parameter steps inside the backward pass."""
    out: dict[str, Any] = {}
    if memory["checkpointing"] != "off":
        out["gradient_checkpointing"] = True
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if memory["compile"]:
        out["torch_compile"] = True
    if memory["optimizer_in_backward"]:
        out["max_grad_norm"] = 0.0
    return out


def _refuse_token_loss_knobs(model: Model, training: Training) -> None:
    """Packing and the chunked loss act on a per-token loss, which a classifier lacks."""
    task = model.task.kind if model.task else "generate"
    written = [k for k in TOKEN_LOSS_KNOBS if getattr(training, k)]
    if task == "generate" or not written:
        return
    where = training.span or model.span
    raise StageError(
        error(
            "FM0808",
            f"`{written[0]}` needs a `generate` task; `{model.name}` does `{task}`",
            where.to_span() if where else None,
            "no token-level loss to pack or chunk",
            help=f"remove `{written[0]}` from the train block",
        )
    )
