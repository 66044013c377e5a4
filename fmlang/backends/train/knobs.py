"""The memory knobs at run time: refuse what this machine cannot honour, before any work,
and turn the rest into `from_pretrained` options and model preparation.

Refused (each with a diagnostic that says what to do instead):
- bitsandbytes missing for `adamw_8bit`/`paged_adamw_8bit` or `quantize = int8|nf4|fp4`
  (FM0832), or no CUDA device for quantization (FM0833);
- `attention = flash` without the `flash_attn` package (FM0832) or without CUDA (FM0833);
- `quantize = gptq|awq` on a checkpoint that is not already quantized that way (FM0834);
- `offload` of optimizer state or parameters, or `sharding` other than ddp across several
  processes: those run through the emitted DeepSpeed/FSDP configs under `accelerate
  launch`, not this single-process executor (FM0835); sharding on one device is a no-op;
- combinations the executor cannot train correctly (FM0836): an optimizer step inside the
  backward pass with gradient accumulation, several processes or fp16 loss scaling; fp16
  trainable weights (`master_weights = none`, `precision = fp16`) under loss scaling.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
BNB_QUANTIZE = ("int8", "nf4", "fp4")
PREQUANTIZED = ("gptq", "awq")
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def refuse_unsupported(job: TrainJob) -> None:
    """Every refusal at once, before the data, tokenizer or weights are read."""
    found = [*_package_refusals(job), *_launcher_refusals(job), *_combination_refusals(job)]
    if found:
        raise StageError(*found)


def _missing(job: TrainJob, package: str, what: str, key: str) -> Diagnostic:
    return error(
        "FM0832",
        f"{what} in `{job.model}` needs the `{package}` package, which is not installed",
        job.span(key, "train"),
        "this setting needs it",
        help=f"install it with `pip install {package}`, or change the setting",
    )


def _no_cuda(job: TrainJob, what: str, key: str) -> Diagnostic:
    return error(
        "FM0833",
        f"{what} in `{job.model}` needs a CUDA device, and this machine has none",
        job.span(key, "train"),
        "this setting runs only on an NVIDIA GPU",
        help="run on a machine with a CUDA GPU, or change the setting",
    )


def _package_refusals(job: TrainJob) -> list[Diagnostic]:
    memory, out = job.memory, []
    if memory.optimizer in BNB_OPTIMIZERS and not _installed("bitsandbytes"):
        out.append(_missing(job, "bitsandbytes", f"`optimizer = {memory.optimizer}`", "train"))
    if memory.quantize in BNB_QUANTIZE:
        what = f"`quantize {memory.quantize}`"
        if not _installed("bitsandbytes"):
            out.append(_missing(job, "bitsandbytes", what, "model"))
        elif not _cuda():
            out.append(_no_cuda(job, what, "model"))
    if memory.attention == "flash":
        if not _installed("flash_attn"):
            out.append(_missing(job, "flash-attn", "`attention = flash`", "train"))
        elif not _cuda():
            out.append(_no_cuda(job, "`attention = flash`", "train"))
    return out


def _launcher_refusals(job: TrainJob) -> list[Diagnostic]:
    memory = job.memory
    multi = _world_size() > 1 and memory.sharding != "ddp"
    if memory.offload == "none" and not multi:
        return []
    what = f"`offload = {memory.offload}`" if memory.offload != "none" else ""
    what = what or f"`sharding = {memory.sharding}` over {_world_size()} processes"
    return [
        error(
            "FM0835",
            f"{what} for `{job.model}` needs DeepSpeed or FSDP, which this single-process "
            "executor does not run",
            job.span("train"),
            "set here",
            help=f"launch the emitted config: `accelerate launch --config_file "
            f"train/{job.model}/accelerate.yaml` (DeepSpeed settings in "
            f"`train/{job.model}/deepspeed.json`), or set `offload = none` and `sharding = ddp`",
        )
    ]


def _combination_refusals(job: TrainJob) -> list[Diagnostic]:
    args, memory, out = job.training_args, job.memory, []
    fp16 = bool(args.get("fp16"))
    if memory.optimizer_in_backward:
        why = [
            "gradient accumulation" if int(args.get("gradient_accumulation_steps", 1)) > 1 else "",
            f"{_world_size()} processes" if _world_size() > 1 else "",
            "fp16 loss scaling" if fp16 else "",
        ]
        if any(why):
            reason = ", ".join(w for w in why if w)
            out.append(_combination(job, f"`optimizer_in_backward` with {reason}",
                                    "remove `optimizer_in_backward`, or train on one device "
                                    "with `grad_accum = 1` and bf16 or fp32"))  # fmt: skip
    if fp16 and memory.master_weights == "none":
        out.append(_combination(job, "fp16 trainable weights (`master_weights = none`) "
                                "under fp16 loss scaling",
                                "use `master_weights = fp32` or `precision = bf16`"))  # fmt: skip
    return out


def _combination(job: TrainJob, what: str, fix: str) -> Diagnostic:
    return error(
        "FM0836",
        f"{what} cannot train correctly in `{job.model}`",
        job.span("train"),
        "these settings",
        help=fix,
    )


def load_options(job: TrainJob) -> dict[str, Any]:
    """`from_pretrained` keywords for the weights dtype, the attention kernel and
    bitsandbytes quantization. Full fine-tuning with fp32 master weights loads in fp32:
    every weight is trainable."""
    import torch

    memory, out = job.memory, {}
    dtype = memory.weights_dtype
    if job.adapter_config is None and memory.master_weights == "fp32":
        dtype = "fp32"
    if dtype is not None and memory.quantize not in PREQUANTIZED:
        out["dtype"] = getattr(torch, TORCH_DTYPES[dtype])
    if memory.attention is not None:
        attention = {"flash": "flash_attention_2"}.get(memory.attention, memory.attention)
        out["attn_implementation"] = attention
    if memory.quantize in BNB_QUANTIZE:
        out["quantization_config"] = _bnb_config(job)
        out["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return out


def _bnb_config(job: TrainJob) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if job.memory.quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type=job.memory.quantize,
        bnb_4bit_use_double_quant=job.memory.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def check_prequantized(job: TrainJob, config: Any) -> None:
    """`quantize = gptq|awq` loads a checkpoint quantized that way; FM0834 otherwise."""
    method = job.memory.quantize
    if method not in PREQUANTIZED:
        return
    quant = getattr(config, "quantization_config", None)
    found = (quant or {}).get("quant_method") if isinstance(quant, dict) else None
    found = found or getattr(quant, "quant_method", None)
    if str(getattr(found, "value", found) or "").lower() == method:
        return
    raise StageError(
        error(
            "FM0834",
            f"`quantize {method}` in `{job.model}` needs a checkpoint already quantized with "
            f"{method.upper()}; the base weights' config.json has "
            + (f"`quant_method` {found}" if found else "no `quantization_config`"),
            job.span("model"),
            f"{method.upper()} weights are produced offline, not while loading",
            help=f"point the base model at a {method.upper()}-quantized checkpoint, or use "
            "`quantize nf4` / `int8` (bitsandbytes, quantized as the weights load)",
        )
    )


def prepare_loaded(job: TrainJob, model: Any) -> Any:
    """After loading: peft's k-bit preparation for a bitsandbytes-quantized base (norms in
    fp32, gradient checkpointing only when the spec asks for it)."""
    if job.memory.quantize not in BNB_QUANTIZE:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model,
        use_gradient_checkpointing=job.memory.checkpointing != "off",
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def selective_layers(model: Any) -> list[bool]:
    """Leave checkpointing on for every second decoder layer (0, 2, 4, …) only; returns the
    layers' flags. HF decoder layers are `GradientCheckpointingLayer`s."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for index, layer in enumerate(layers):
        if index % 2 == 1:
            layer.gradient_checkpointing = False
    return [bool(layer.gradient_checkpointing) for layer in layers]


def selective_callback() -> Any:
    """A TrainerCallback that, once the Trainer has turned checkpointing on for every layer
    (`gradient_checkpointing`), turns it off again on every second layer."""
    from transformers import TrainerCallback

    class SelectiveCheckpointing(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            selective_layers(kwargs["model"])

    return SelectiveCheckpointing()
