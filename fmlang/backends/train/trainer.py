"""`train(job)`: a seeded, resumable transformers `Trainer` run with a PEFT adapter (a job
with `dp { … }` trains in the DP-SGD loop of `dp.py` instead, with the same outputs).

The run is reproducible for a seed (`set_seed` before the model and adapter are built,
`data_seed` for the sampler). Checkpoints go to `<output>/checkpoints/` every `save_steps`;
a rerun after a kill resumes from the newest one that is complete and verifies against its
digests (see `checkpoints`), and a rerun of a run whose last step was checkpointed takes no
step more. The final adapter (with the classifier head) is saved into `<output>/adapter/`
(a fully fine-tuned model into `<output>/model/`), with the same bytes whatever the
process's PYTHONHASHSEED, and `<output>/train_result.json` records the run.

SIGINT or SIGTERM under `stopping.requests()` stops at the end of the current optimizer
step: that step's checkpoint is saved (and marked complete) and `stopping.Interrupted` is
raised instead of saving the final adapter; a rerun resumes from that checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fmlang.atomic import json_text, write_text_atomic
from fmlang.backends import stopping
from fmlang.backends.cache import writing
from fmlang.backends.stage_output import say
from fmlang.backends.train import checkpoints, early_stopping, knobs, privacy
from fmlang.backends.train.adapter import attach_adapter
from fmlang.backends.train.data import (
    Collator,
    Examples,
    classify_examples,
    generate_examples,
    pack_examples,
    read_table,
)
from fmlang.backends.train.executor import executor_trainer_class
from fmlang.backends.train.fisher import is_fisher_mask
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
    dp: dict[str, Any] | None = None  # DP-SGD: the mechanism and the epsilon spent
    early_stopping: dict[str, Any] | None = None  # its checks and stop (`early_stopping.py`)

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
    """Marks each checkpoint complete once every process has saved it, then rotates; and
    stops after the current step when a stop is requested."""
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

    return [CompleteCheckpoints(), stop_callback()]


def _signal_everywhere(asked: signal.Signals | None) -> signal.Signals | None:
    """The signal any process was asked to stop by (one all-reduce of its number under
    several processes), so that every process stops after the same step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return asked
    number = torch.tensor(
        [int(asked or 0)], device="cuda" if dist.get_backend() == "nccl" else "cpu"
    )
    dist.all_reduce(number, op=dist.ReduceOp.MAX)
    return signal.Signals(int(number.item())) if int(number.item()) else None


def stop_callback() -> Any:
    """A TrainerCallback: once a stop is requested, save this step's checkpoint and end
    training; `.stopped_by` then holds the signal that asked for it."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        stopped_by: signal.Signals | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.stopped_by = _signal_everywhere(stopping.requested())
            if self.stopped_by is not None:
                control.should_save = True
                control.should_training_stop = True

    return StopOnSignal()


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


def resume_point(job: TrainJob) -> Path | None:
    """The newest checkpoint whose files are all as they were saved. The main process
    removes the incomplete and damaged ones first, saying which and why (stderr); then
    every process reads the same answer."""
    folder = job.output / "checkpoints"
    if _is_main_process():
        resume, discarded = checkpoints.resumable(folder)
        for line in discarded:
            say(f"note: {line}")
        if discarded:
            fallback = f"resuming from `{resume.name}`" if resume else "training from the start"
            say(f"note: {fallback}")
    _barrier()
    return checkpoints.last_complete(folder)


def _finished(checkpoint: Path, args: Any) -> bool:
    """Whether the Trainer's checkpoint was saved after the run's last step: resuming from
    it would train past the end (the Trainer steps once before it checks)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        step, planned = int(state["global_step"]), int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return 0 < planned <= step and (args.max_steps <= 0 or args.max_steps <= step)


def _restore_finished(trainer: Any, checkpoint: Path) -> None:
    """The finished run's weights and state from its last checkpoint, without a step."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


@dataclass(frozen=True)
class Prepared:
    """What both training loops start from: the arguments, tokenizer, rows and the model
    with its adapter, built after `set_seed`."""

    args: Any
    tokenizer: Any
    rows: Examples
    model: Any


def prepare(job: TrainJob, progress: bool) -> Prepared:
    """Refuse what cannot run here, then the tokenizer, rows, model and adapter."""
    from transformers import set_seed

    knobs.refuse_unsupported(job)
    privacy.refuse_unsupported(job)
    check_base_quantization(job)
    args = training_arguments(job, progress)
    set_seed(args.seed)
    tokenizer = load_tokenizer(job)
    rows = examples(job, tokenizer)
    model = knobs.prepare_loaded(job, load_model(job))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return Prepared(args, tokenizer, rows, attach_adapter(job, model))


def _build(
    job: TrainJob, progress: bool, extra: tuple[Any, ...], probe: MemoryProbe
) -> tuple[Any, Examples]:
    """The prepared run as a Trainer with the executor's callbacks."""
    parts = prepare(job, progress)
    keep = job.training_args.get("save_total_limit")
    selective = [knobs.selective_callback()] if job.memory.checkpointing == "selective" else []
    early = [early_stopping.callback(job, parts.tokenizer)] if job.early_stopping else []
    trainer = _trainer_class(job.task, job.memory)(
        model=parts.model,
        args=parts.args,
        train_dataset=parts.rows,
        data_collator=Collator(parts.tokenizer.pad_token_id),
        processing_class=parts.tokenizer,
        callbacks=[*_callbacks(job, keep), *selective, *early, memory_callback(probe), *extra],
    )
    return trainer, parts.rows


def train(job: TrainJob, progress: bool = True, callbacks: tuple[Any, ...] = ()) -> TrainResult:
    """Train `job` to completion (resuming from its newest verified checkpoint), save the final
    adapter and `train_result.json` (with the measured memory peak); `callbacks` are extra
    `TrainerCallback`s (the DP-SGD loop takes none). A requested stop raises
    `stopping.Interrupted` once the current step's checkpoint is saved."""
    probe = MemoryProbe()  # before the model loads: the baseline
    if job.dp is not None:
        from fmlang.backends.train.dp import train_private

        with writing(f"training `{job.model}`"):
            private = train_private(job, progress, probe)
        return replace(private, early_stopping=early_stopping.not_available(job, "DP-SGD"))
    if is_fisher_mask(job.adapter_config):  # FishMask trains in its own loop
        from fmlang.backends.train.fisher_train import train_fisher

        fisher = train_fisher(job, progress, probe)
        return replace(fisher, early_stopping=early_stopping.not_available(job, "FishMask"))
    trainer, rows = _build(job, progress, callbacks, probe)
    resume = resume_point(job)
    stopping.check("before training started")
    started = time.perf_counter()
    with writing(f"training `{job.model}`"):
        if resume is not None and _finished(resume, trainer.args):
            _restore_finished(trainer, resume)  # a rerun after the last step: no step more
        else:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - started
    _raise_if_stopped(trainer)
    resumed = int(resume.name.split("-")[1]) if resume else 0
    result = _result(job, trainer, rows, resumed, wall, probe.measured())
    stopper = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "report")), None)
    if stopper is not None:
        result = replace(result, early_stopping=stopper.report())
    if trainer.is_world_process_zero():
        with writing(f"training `{job.model}`"):
            _save_final(job, trainer)
            write_text_atomic(job.output / "train_result.json", result.to_json())
    _barrier()
    return result


def _raise_if_stopped(trainer: Any) -> None:
    """Training that ended before its last step because a stop was requested (every process
    stopped after the same step, once its checkpoint was saved): raise `Interrupted`."""
    state = trainer.state
    stop = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "stopped_by"))
    if state.global_step < state.max_steps and stop.stopped_by is not None:
        raise stopping.Interrupted(
            stop.stopped_by, f"after step {state.global_step}; checkpoint saved"
        )


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
    model = trainer.accelerator.unwrap_model(trainer.model)
    save_final(job, model, trainer.processing_class)


def save_final(job: TrainJob, model: Any, tokenizer: Any) -> None:
    """Save into a temporary folder, then swap it in: a reader never sees half an adapter."""
    target = final_folder(job)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    stable_adapter_config(staging, model)
    if job.adapter_config is None:
        tokenizer.save_pretrained(staging)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def stable_adapter_config(folder: Path, model: Any) -> None:
    """peft writes the settings it holds as sets (`target_modules`, …) in set order, which
    changes with PYTHONHASHSEED, so identical weights would save as different bytes (and
    register under different hashes): sort them, in fmc's one JSON form."""
    path = folder / "adapter_config.json"
    configs = getattr(model, "peft_config", None)
    if not path.is_file() or not isinstance(configs, dict) or not configs:
        return
    as_sets = {k for c in configs.values() for k, v in vars(c).items() if isinstance(v, set)}
    document = json.loads(path.read_text(encoding="utf-8"))
    for key in as_sets & set(document):
        if isinstance(document[key], list) and all(isinstance(v, str) for v in document[key]):
            document[key] = sorted(document[key])
    write_text_atomic(path, json_text(document))
