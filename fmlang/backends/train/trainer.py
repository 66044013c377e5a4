"""`train(job)`: a seeded, resumable transformers `Trainer` run with a PEFT adapter.

The run is reproducible for a seed (`set_seed` before the model and adapter are built,
`data_seed` for the sampler). Checkpoints go to `<output>/checkpoints/` every `save_steps`;
a rerun after a kill resumes from the last complete one (see `checkpoints`). The final
adapter (with the classifier head) is saved into `<output>/adapter/` (a fully fine-tuned
model into `<output>/model/`), and `<output>/train_result.json` records the run.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fmlang.atomic import json_text, write_text_atomic
from fmlang.backends.train import checkpoints, knobs
from fmlang.backends.train.adapter import attach_adapter, refuse_dp
from fmlang.backends.train.data import (
    Collator,
    Examples,
    classify_examples,
    generate_examples,
    pack_examples,
    read_table,
)
from fmlang.backends.train.executor import executor_trainer_class
from fmlang.backends.train.job import MemorySettings, TrainJob
from fmlang.backends.train.loader import check_base_quantization, load_model, load_tokenizer
from fmlang.backends.train.memory import MemoryProbe, memory_callback
from fmlang.diagnostics import error
from fmlang.errors import StageError

# Settings the executor owns: where files go, what is reported, how data reaches the model.
_FORCED = {
    "report_to": "none",
    "remove_unused_columns": False,
    "eval_strategy": "no",
    "save_total_limit": None,
    "push_to_hub": False,
}


@dataclass(frozen=True)
class TrainResult:
    """What a run did; written as `train_result.json` beside the adapter."""

    model: str
    steps: int
    epochs: float
    train_rows: int
    skipped_rows: int
    resumed_from_step: int
    loss_curve: tuple[tuple[int, float], ...]
    final_loss: float | None
    wall_s: float
    samples_per_s: float
    device: str
    world_size: int
    output: str
    memory: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json_text(asdict(self))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_arguments(job: TrainJob, progress: bool) -> Any:
    """`TrainingArguments` from the job's keyword arguments plus the executor's own."""
    import torch
    from transformers import TrainingArguments

    kwargs = {**job.training_args, **_FORCED}
    kwargs["output_dir"] = str(job.output / "checkpoints")
    kwargs["disable_tqdm"] = not progress
    kwargs.setdefault("data_seed", kwargs.get("seed", 42))
    kwargs.setdefault("logging_steps", 10)
    _rename_checkpointing(kwargs, TrainingArguments)
    if not torch.cuda.is_available():
        kwargs.setdefault("dataloader_pin_memory", False)
        if _world_size() > 1:
            kwargs["ddp_backend"] = "gloo"
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StageError(
            error(
                "FM0826",
                f"transformers does not accept the training settings of `{job.model}`",
                job.span("train"),
                "these settings",
                help="check the `train { ... }` block against transformers.TrainingArguments",
                notes=(str(exc).splitlines()[0],),
            )
        ) from exc


def _rename_checkpointing(kwargs: dict[str, Any], arguments: Any) -> None:
    """transformers releases that renamed `gradient_checkpointing*` to
    `activation_checkpointing*` warn on the old names: pass the new ones where they exist."""
    fields = getattr(arguments, "__dataclass_fields__", {})
    if "activation_checkpointing" not in fields:
        return
    for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
        if old in kwargs:
            kwargs[old.replace("gradient", "activation")] = kwargs.pop(old)


def _trainer_class(task: str, memory: MemorySettings | None = None) -> Any:
    """The executor's Trainer subclass (`executor.executor_trainer_class`)."""
    return executor_trainer_class(task, memory)


def _callbacks(job: TrainJob, keep: int | None) -> list[Any]:
    """Marks each checkpoint complete once every process has saved it, then rotates."""
    from transformers import TrainerCallback

    folder = job.output / "checkpoints"

    class CompleteCheckpoints(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _barrier()
            if state.is_world_process_zero:
                path = folder / f"checkpoint-{state.global_step}"
                if path.is_dir():
                    checkpoints.mark_complete(path, state.global_step)
                    checkpoints.rotate(folder, keep)
            _barrier()

    return [CompleteCheckpoints()]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def examples(job: TrainJob, tokenizer: Any) -> Examples:
    """The tokenized training rows (packed into full rows when the job packs); a StageError
    when none is left to train on."""
    table = read_table(job, job.train_data, "training data")
    if job.task == "generate":
        rows = generate_examples(job, tokenizer, table)
        if job.memory.packing and rows.rows:
            rows = pack_examples(rows, job.max_seq, tokenizer.eos_token_id)
            _require_rows(job, rows, f"fewer tokens than one packed row of {job.max_seq}")
    else:
        assert job.columns.label is not None
        rows = classify_examples(job, tokenizer, table, job.columns.label, job.columns.require)
    _require_rows(job, rows, f"{rows.skipped} rows without a label or text")
    return rows


def _require_rows(job: TrainJob, rows: Examples, why: str) -> None:
    if rows.rows:
        return
    raise StageError(
        error(
            "FM0825",
            f"no row of {job.train_data} can train `{job.model}` ({why})",
            job.span("train.data"),
            "the training data",
            help="check that the labeling functions cover some rows, or label more data",
        )
    )


def _resume_point(job: TrainJob) -> Path | None:
    folder = job.output / "checkpoints"
    if _is_main_process():
        checkpoints.remove_incomplete(folder)
    return checkpoints.last_complete(folder)


def _build(
    job: TrainJob, progress: bool, extra: tuple[Any, ...], probe: MemoryProbe
) -> tuple[Any, Examples]:
    """Refuse what cannot run here, then the tokenizer, rows, model, adapter and Trainer."""
    from transformers import set_seed

    refuse_dp(job)
    knobs.refuse_unsupported(job)
    check_base_quantization(job)
    args = training_arguments(job, progress)
    set_seed(args.seed)
    tokenizer = load_tokenizer(job)
    rows = examples(job, tokenizer)
    model = knobs.prepare_loaded(job, load_model(job))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = attach_adapter(job, model)
    keep = job.training_args.get("save_total_limit")
    selective = [knobs.selective_callback()] if job.memory.checkpointing == "selective" else []
    trainer = _trainer_class(job.task, job.memory)(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[*_callbacks(job, keep), *selective, memory_callback(probe), *extra],
    )
    return trainer, rows


def train(job: TrainJob, progress: bool = True, callbacks: tuple[Any, ...] = ()) -> TrainResult:
    """Train `job` to completion (resuming from its last complete checkpoint), save the final
    adapter and `train_result.json` (with the measured memory peak); `callbacks` are extra
    `TrainerCallback`s."""
    probe = MemoryProbe()  # before the model loads: the baseline
    trainer, rows = _build(job, progress, callbacks, probe)
    resume = _resume_point(job)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - started
    resumed = int(resume.name.split("-")[1]) if resume else 0
    result = _result(job, trainer, rows, resumed, wall, probe.measured())
    if trainer.is_world_process_zero():
        _save_final(job, trainer)
        write_text_atomic(job.output / "train_result.json", result.to_json())
    _barrier()
    return result


def _result(
    job: TrainJob, trainer: Any, rows: Examples, resumed: int, wall: float, memory: dict[str, Any]
) -> TrainResult:
    args, state = trainer.args, trainer.state
    curve = tuple((int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    samples = (state.global_step - resumed) * per_step * args.world_size
    return TrainResult(
        model=job.model,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        train_rows=len(rows),
        skipped_rows=rows.skipped,
        resumed_from_step=resumed,
        loss_curve=curve,
        final_loss=curve[-1][1] if curve else None,
        wall_s=round(wall, 3),
        samples_per_s=round(samples / wall, 3) if wall > 0 else 0.0,
        device=str(args.device),
        world_size=args.world_size,
        output=str(job.output),
        memory=memory,
    )


def final_folder(job: TrainJob) -> Path:
    """Where the trained adapter (or the fully fine-tuned model) ends up."""
    return job.output / ("adapter" if job.adapter_config is not None else "model")


def _save_final(job: TrainJob, trainer: Any) -> None:
    """Save into a temporary folder, then swap it in: a reader never sees half an adapter."""
    target = final_folder(job)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(staging)
    if job.adapter_config is None:
        trainer.processing_class.save_pretrained(staging)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
