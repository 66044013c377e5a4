"""Training plans: a model's `train { }` block → `transformers.TrainingArguments` keyword
arguments plus what the executor reads beside them (data, columns, sequence length, DP).

`TrainingPlan.training_args` holds keyword arguments `TrainingArguments(output_dir=…, **args)`
accepts in transformers 5.x; `to_json()` is `train/<model>/training_args.json`. Every value
is written out, including the ones that equal transformers' defaults, so the artifact does not
change meaning when a transformers release changes a default. The mapping:

- epochs → num_train_epochs (3 when neither epochs nor max_steps is set); max_steps as is
- lr → learning_rate (5e-5); batch (knob `<model>.train.batch`) → per_device_train_batch_size
- grad_accum → gradient_accumulation_steps (1); weight_decay (0.0)
- warmup (a fraction) → warmup_steps as a float below 1, which transformers 5 reads as a
  ratio of the total steps
- optimizer (knob `<model>.train.optimizer`) → optim: adamw → adamw_torch, adamw_fused →
  adamw_torch_fused, adamw_8bit → adamw_bnb_8bit, paged_adamw_8bit, sgd, adafactor
- optimizer_in_backward → max_grad_norm 0 (each parameter steps as soon as its gradient is
  ready, so no global norm ever exists to clip by); the executor installs the hooks
- precision → bf16 / fp16 flags (fp32 neither); when omitted, the weights' dtype decides as
  in the verifier: fp32 weights train in fp32, others in bf16
- checkpointing (knob `<model>.train.checkpointing`) full / selective / offload →
  gradient_checkpointing with gradient_checkpointing_kwargs {"use_reentrant": false}; the
  executor turns it off on every second layer (selective) or keeps the checkpoints in host
  memory (offload)
- compile → torch_compile
- seed → seed and data_seed (42 when omitted)
- checkpoint_every → save_strategy steps + save_steps, else a checkpoint per epoch; the last
  SAVE_TOTAL_LIMIT checkpoints are kept (resuming needs the latest)
- logging every LOGGING_STEPS steps, report_to none; use_cpu on CPU hardware

`TrainingPlan.memory` carries the resolved memory knobs the executor applies itself (see
`memory_settings`): weights_dtype (default: the base model's dtype, else fp32),
master_weights (default fp32 for adapters and fp32 weights, none for full fine-tuning of
half-precision weights, as the verifier budgets), checkpointing, attention (None: the
transformers default), packing, chunked_loss, optimizer, optimizer_in_backward, sharding,
offload (knobs `<model>.train.sharding` / `.offload`), compile, quantize (knob
`<model>.quantize`) and double_quant. Packing and the chunked loss need a token loss:
a classifier is refused with FM0808 (the checker's FM0336, for IR built without it).

`max_seq`, the length the executor truncates (and packs) training and evaluation rows at,
is the training length: `seq_len` (knob `<model>.train.seq_len`) as the verifier budgeted
it, else `default_seq_len` (512, or the model's written `max_seq` when shorter), never
beyond the base model's own maximum. The serving `max_seq` does not cut rows that `seq_len`
asks for, so what `fmc plan` shows, what the verifier budgets and what the job trains at are
one number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmlang.atomic import json_text
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import DataRef, Hardware, Model, PretrainedModel, Spec, Training
from fmlang.lower.adapters import KnobValues, base_of, int_knob, task_type_of
from fmlang.lower.labels import split_path
from fmlang.lower.training_memory import memory_arguments, memory_settings
from fmlang.verify.train_fit import (
    DEFAULT_TRAIN_SEQ,
    MAX_SEQ_BUDGET,
    default_seq_len,
    training_hardware,
    weights_dtype_of,
)

OPTIMIZERS = {
    "adamw": "adamw_torch",
    "adamw_fused": "adamw_torch_fused",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
}
DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "num_train_epochs": 3.0,
    "gradient_accumulation_steps": 1,
    "weight_decay": 0.0,
    "seed": 42,
    "max_grad_norm": 1.0,
}
DEFAULT_BATCH = 8  # the per-device batch the verifier assumes when nothing sizes it
LOGGING_STEPS = 10
SAVE_TOTAL_LIMIT = 2


@dataclass(frozen=True)
class TrainingPlan:
    """One model's training: TrainingArguments keywords and what the executor reads."""

    model: str
    task: str | None
    classes: tuple[str, ...]
    training_args: dict[str, Any]
    data: dict[str, str | None]
    columns: dict[str, str | None]
    max_seq: int
    precision: str
    hardware: str | None
    devices: int
    dp: dict[str, float] | None = None
    base: dict[str, str | None] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """`train/<model>/training_args.json`: the TrainingArguments keyword arguments."""
        return json_text(self.training_args)

    def files(self) -> dict[str, str]:
        return {f"train/{self.model}/training_args.json": self.to_json()}


def precision_of(training: Training, base: PretrainedModel) -> str:
    """The compute precision: as written, else fp32 for fp32 weights and bf16 otherwise
    (the weights as loaded: `weights_dtype`, else the base model's dtype)."""
    return training.precision or ("fp32" if weights_dtype_of(training, base) == "fp32" else "bf16")


def training_of(model: Model) -> tuple[Training, DataRef]:
    """The model's train block and its data; FM0805 when either is missing."""
    training = model.training
    if training is not None and training.data is not None:
        return training, training.data
    where = training.span if training and training.span else model.span
    raise StageError(
        error(
            "FM0805",
            f"model `{model.name}` has no training data",
            where.to_span() if where else None,
            "nothing says what to train on",
            help="add `train { data = dataset.split, input = column }` (or `data = labels`)",
        )
    )


def lower_training(spec: Spec, model: Model, knobs: KnobValues) -> TrainingPlan:
    """The model's training plan, with `auto` knobs resolved from the verifier's `knobs`."""
    training, data = training_of(model)
    base = base_of(spec, model)
    hardware = training_hardware(spec, model)
    precision = precision_of(training, base)
    memory = memory_settings(model, training, base, knobs)
    args = training_arguments(model, training, knobs, precision, hardware, memory)
    task = model.task
    return TrainingPlan(
        model=model.name,
        task=task.kind if task else None,
        classes=task.classes if task else (),
        training_args=args,
        data=data_source(data),
        columns=columns_of(training),
        max_seq=max_seq_of(model, training, base, knobs),
        precision=precision,
        hardware=hardware.name if hardware else None,
        devices=training.devices or 1,
        dp=dp_settings(training),
        base=base_document(model, base),
        memory=memory,
    )


def training_arguments(
    model: Model,
    training: Training,
    knobs: KnobValues,
    precision: str,
    hardware: Hardware | None,
    memory: dict[str, Any],
) -> dict[str, Any]:
    """TrainingArguments keyword arguments (all but output_dir), sorted by name; `memory`
    is the resolved memory knobs (`memory_settings`)."""
    seed = training.seed if training.seed is not None else DEFAULTS["seed"]
    batch_key = f"{model.name}.train.batch"
    args: dict[str, Any] = {
        **DEFAULTS,
        "per_device_train_batch_size": int_knob(training.batch, batch_key, knobs, DEFAULT_BATCH),
        "optim": OPTIMIZERS[memory["optimizer"]],
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "seed": seed,
        "data_seed": seed,
        "warmup_steps": warmup_ratio(model, training),
        "logging_strategy": "steps",
        "logging_steps": LOGGING_STEPS,
        "report_to": "none",
        "save_total_limit": SAVE_TOTAL_LIMIT,
        "use_cpu": hardware is not None and hardware.kind == "cpu",
        **_schedule(training),
        **memory_arguments(memory),
    }
    return dict(sorted(args.items()))


def _schedule(training: Training) -> dict[str, Any]:
    """Length, step size and checkpointing: only what the spec wrote overrides DEFAULTS."""
    out: dict[str, Any] = {}
    if training.epochs is not None:
        out["num_train_epochs"] = float(training.epochs)
    if training.max_steps is not None:
        out["max_steps"] = training.max_steps
    if training.lr is not None:
        out["learning_rate"] = float(training.lr)
    if training.grad_accum is not None:
        out["gradient_accumulation_steps"] = training.grad_accum
    if training.weight_decay is not None:
        out["weight_decay"] = float(training.weight_decay)
    if training.checkpoint_every is not None:
        out.update(save_strategy="steps", save_steps=training.checkpoint_every)
    else:
        out["save_strategy"] = "epoch"
    return out


def warmup_ratio(model: Model, training: Training) -> float:
    """`warmup` as transformers 5 reads a float `warmup_steps`: a ratio below 1."""
    warmup = float(training.warmup or 0.0)
    if warmup < 1.0:
        return warmup
    where = training.span or model.span
    raise StageError(
        error(
            "FM0806",
            f"`warmup = {training.warmup}` in `{model.name}` warms up for the whole run",
            where.to_span() if where else None,
            "the learning rate would never reach `lr`",
            help="use a fraction below 100%, such as `warmup = 0.05`",
        )
    )


def data_source(data: DataRef) -> dict[str, str | None]:
    """What to read, and where `fmc run` puts it (relative to the build folder)."""
    path = (
        f"run/labels/{data.labels}.parquet" if data.labels else split_path(data.dataset, data.split)
    )
    return {"dataset": data.dataset, "split": data.split, "labels": data.labels, "path": path}


def columns_of(training: Training) -> dict[str, str | None]:
    return {
        "input": training.input,
        "target": training.target,
        "prompt": training.prompt,
        "completion": training.completion,
    }


def max_seq_of(model: Model, training: Training, base: PretrainedModel, knobs: KnobValues) -> int:
    """The length the job truncates rows at: the training length (`train_seq_len`)."""
    return train_seq_len(model, training, base, knobs)


def train_seq_len(
    model: Model, training: Training, base: PretrainedModel, knobs: KnobValues
) -> int:
    """The training sequence length the verifier sized training memory with: `seq_len` as
    written or chosen, else `default_seq_len`; never beyond the base's maximum."""
    limit = base.max_seq or DEFAULT_TRAIN_SEQ
    longest = min(limit, MAX_SEQ_BUDGET)
    key = f"{model.name}.train.seq_len"
    default = default_seq_len(model, limit)
    return min(int_knob(training.seq_len, key, knobs, default, 64, longest), limit)


def dp_settings(training: Training) -> dict[str, float] | None:
    dp = training.dp
    if dp is None:
        return None
    values = {"epsilon": dp.epsilon, "delta": dp.delta, "max_grad_norm": dp.max_grad_norm}
    return {name: float(value) for name, value in values.items() if value is not None}


def base_document(model: Model, base: PretrainedModel) -> dict[str, str | None]:
    weights = base.weights
    assert weights is not None  # base_of checked it
    return {
        "name": base.name,
        "kind": weights.kind,
        "location": weights.location,
        "revision": weights.revision,
        "task_type": task_type_of(model, base),
    }
