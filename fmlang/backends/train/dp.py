"""`train_private(job)`: DP-SGD with opacus, in place of the Trainer for a job with `dp { … }`.

Each step samples every training row independently with probability q (opacus' Poisson
`UniformWithReplacementSampler`; an expected `batch x grad_accum` rows), computes each
row's gradient (opacus' `GradSampleModule`, hooked on the trainable layers only: the
adapter, and a classifier's head), clips it to `max_grad_norm`, sums, adds Gaussian noise
of `noise_multiplier x max_grad_norm` and divides by the expected batch (`DPOptimizer`).
A sampled batch larger than `batch` rows runs in several forward/backward passes whose
clipped gradients add up before the one noisy step, as opacus' `BatchMemoryManager` does.
The loss of a row is the mean over its own target tokens (generate) or its cross-entropy
(classify): a row's gradient never depends on which other rows were sampled with it,
which the clipping bound needs. The noise multiplier and the budget come from
`privacy.py`; the accountant steps with every optimizer step and the run stops before a
step that would spend more than the spec's epsilon.

Everything else follows the Trainer's run: the same arguments (learning rate, schedule
and warmup, optimizer, weight decay, bf16 autocast, logging and save intervals), the same
model and adapter (`trainer.prepare`), checkpoints every `save_steps` (or epoch of 1/q
steps) with the completeness marker (`dp_state`), resumption from the last complete one,
a stop at the next step boundary when a signal asks (checkpoint first, then
`stopping.Interrupted`), the final adapter in `<output>/adapter/` and
`train_result.json`, whose `dp` entry records the mechanism and the epsilon spent.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.atomic import write_text_atomic
from fmlang.backends import stopping
from fmlang.backends.train import dp_state, knobs
from fmlang.backends.train.data import IGNORE_INDEX, Collator
from fmlang.backends.train.dp_state import LoopState, Resumable
from fmlang.backends.train.job import TrainJob
from fmlang.backends.train.memory import PROFILED_STEPS, MemoryProbe
from fmlang.backends.train.privacy import Ledger, PrivacyPlan, privacy_plan, unsupported_layers
from fmlang.backends.train.trainer import (
    Prepared,
    TrainResult,
    prepare,
    resume_point,
    save_final,
)


@dataclass(frozen=True)
class Schedule:
    """How many steps, of how many rows, and when to log and save, from the Trainer's
    arguments: `physical` rows per forward pass, `logical` expected rows per step, an
    epoch of `rows / logical` steps (opacus' DPDataLoader length)."""

    rows: int
    physical: int
    logical: int
    steps: int
    log_every: int
    save_every: int | None

    @classmethod
    def of(cls, args: Any, rows: int) -> Schedule:
        physical = int(args.per_device_train_batch_size)
        logical = min(physical * int(args.gradient_accumulation_steps), rows)
        per_epoch = max(1, round(rows / logical))
        steps = int(args.max_steps)
        if steps <= 0:
            steps = max(1, math.ceil(float(args.num_train_epochs) * per_epoch))
        strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
        every = {"steps": _interval(args.save_steps, steps), "no": None}.get(strategy, per_epoch)
        return cls(rows, physical, logical, steps, _interval(args.logging_steps, steps), every)


def _interval(value: float, steps: int) -> int:
    """A Trainer interval: a whole number of steps, or a fraction of them when below 1."""
    return max(1, math.ceil(value * steps) if value < 1 else int(value))


class PrivateRun:
    """The model under opacus' per-sample hooks, its DP optimizer and schedule, and the
    secret generators of the sampler and the noise."""

    def __init__(self, job: TrainJob, parts: Prepared, plan: PrivacyPlan, schedule: Schedule):
        from opacus import GradSampleModule  # type: ignore[import-untyped]
        from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]
        from transformers import get_scheduler

        self.job, self.parts, self.schedule = job, parts, schedule
        self.device = parts.args.device
        if job.memory.quantize not in knobs.BNB_QUANTIZE:  # bitsandbytes placed it already
            parts.model.to(self.device)  # before opacus wraps it
        try:
            self.model = GradSampleModule(parts.model, batch_first=True, loss_reduction="mean")
        except NotImplementedError as exc:
            raise unsupported_layers(job, exc) from exc
        self.model.train()  # as the Trainer does; opacus records activations only in training
        sampler, noise = dp_state.generators(dp_state.noise_seed(self.folder), self.device)
        inner = _optimizer(parts.args, parts.model)
        self.optimizer = DPOptimizer(
            inner,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.expected_batch,
            loss_reduction="mean",
            generator=noise,
        )
        scheduler = get_scheduler(
            parts.args.lr_scheduler_type,
            inner,
            num_warmup_steps=parts.args.get_warmup_steps(schedule.steps),
            num_training_steps=schedule.steps,
            scheduler_specific_kwargs=parts.args.lr_scheduler_kwargs or None,
        )
        self.live = Resumable(parts.model, inner, scheduler, sampler, noise)
        self.plan = plan
        self.collate = Collator(parts.tokenizer.pad_token_id)

    @property
    def folder(self) -> Path:
        return self.job.output / "checkpoints"

    def batches(self, steps: int) -> Iterator[list[int]]:
        """The row indices of the next `steps` Poisson samples."""
        from opacus.utils.uniform_sampler import (  # type: ignore[import-untyped]
            UniformWithReplacementSampler,
        )

        return iter(
            UniformWithReplacementSampler(
                num_samples=self.schedule.rows,
                sample_rate=self.plan.sample_rate,
                generator=self.live.sampler,
                steps=steps,
            )
        )

    def step(self, indices: list[int]) -> float | None:
        """One noisy optimizer step on the sampled rows (in passes of at most `physical`
        rows); the mean of their losses, None for an empty sample."""
        size = self.schedule.physical
        passes = [indices[i : i + size] for i in range(0, len(indices), size)] or [[]]
        total = 0.0
        for number, rows in enumerate(passes):
            if rows:
                total += self.backward(rows) * len(rows)
            else:
                self._no_rows()
            self.optimizer.signal_skip_step(do_skip=number < len(passes) - 1)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.live.scheduler.step()
        return total / len(indices) if indices else None

    def backward(self, rows: list[int]) -> float:
        """Forward and backward over these rows: each trainable weight gets its per-row
        gradients (`grad_sample`); returns the mean loss."""
        batch = self.collate([self.parts.rows[i] for i in rows])
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        with self._autocast():
            outputs = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
        loss = per_row_losses(self.job.task, outputs.logits, batch["labels"]).mean()
        loss.backward()
        return float(loss.detach())

    def _no_rows(self) -> None:
        """An empty Poisson sample: no row's gradient, only the noise (opacus' empty batch)."""
        import torch

        for parameter in self.optimizer.params:
            parameter.grad_sample = torch.zeros(
                (0, *parameter.shape), device=parameter.device, dtype=parameter.dtype
            )

    def _autocast(self) -> Any:
        import torch

        if not self.parts.args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def _optimizer(args: Any, model: Any) -> Any:
    """The Trainer's optimizer for these arguments, with weight decay on matrices only."""
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return cls([g for g in groups if g["params"]], **kwargs)


def per_row_losses(task: str, logits: Any, labels: Any) -> Any:
    """One loss per row: the mean next-token cross-entropy over the row's own target
    tokens (generate), or the row's (soft) cross-entropy (classify)."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    if task == "classify":
        if labels.is_floating_point():
            return -(labels * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        return F.cross_entropy(logits, labels, reduction="none")
    targets = labels[:, 1:]
    tokens = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts


def train_private(job: TrainJob, progress: bool, probe: MemoryProbe) -> TrainResult:
    """Train `job` with DP-SGD to its last step, or to the last step its budget allows;
    save the adapter and `train_result.json`. A requested stop saves a checkpoint and
    raises `stopping.Interrupted`."""
    parts = prepare(job, progress)
    schedule = Schedule.of(parts.args, len(parts.rows))
    plan = privacy_plan(job, len(parts.rows), schedule.logical, schedule.steps)
    run = PrivateRun(job, parts, plan, schedule)
    resume = resume_point(job)
    state = dp_state.load(resume, run.live) if resume else LoopState()
    ledger = Ledger(plan, state.history)
    last = state.step + ledger.steps_within_budget(schedule.steps - state.step)
    resumed = state.step
    stopping.check("before training started")
    started = time.perf_counter()
    sampled = _loop(run, state, ledger, last, probe, progress)
    wall = time.perf_counter() - started
    dp = {**plan.summary(), "epsilon_spent": ledger.spent(), "steps": state.step,
          "stopped_at_budget": last < schedule.steps}  # fmt: skip
    result = _result(job, parts, state, resumed, wall, sampled, probe, dp)
    save_final(job, parts.model, parts.tokenizer)
    write_text_atomic(job.output / "train_result.json", result.to_json())
    return result


def _loop(
    run: PrivateRun, state: LoopState, ledger: Ledger, last: int, probe: MemoryProbe,
    progress: bool,
) -> int:  # fmt: skip
    """Steps until `last`; returns how many rows were sampled."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    keep = run.job.training_args.get("save_total_limit")
    batches, sampled = run.batches(last - state.step), 0
    probe.training_started()
    if state.step == 0:
        probe.steps_started(run.model)
    with (
        warnings.catch_warnings(),
        tqdm(total=last, initial=state.step, disable=not progress) as bar,
    ):
        # opacus' hooks see frozen inputs (token embeddings) and torch says so every step
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        while state.step < last:
            indices = next(batches)
            loss = run.step(indices)
            ledger.step()
            state.step, sampled = state.step + 1, sampled + len(indices)
            _log(run.schedule, state, loss)
            _profile(probe, run, state.step)
            bar.update(1)
            saved = _save_due(run, state, ledger, keep, last)
            _stop_if_asked(run, state, ledger, keep, last, saved)
    probe.steps_done()
    return sampled


def _log(schedule: Schedule, state: LoopState, loss: float | None) -> None:
    if loss is not None:
        state.pending.append(loss)
    if state.step % schedule.log_every == 0 and state.pending:
        state.loss_curve.append((state.step, sum(state.pending) / len(state.pending)))
        state.pending = []


def _profile(probe: MemoryProbe, run: PrivateRun, step: int) -> None:
    probe.count_terms(run.parts.model, run.live.optimizer)
    if step >= PROFILED_STEPS:
        probe.steps_done()


def _save_due(
    run: PrivateRun, state: LoopState, ledger: Ledger, keep: int | None, last: int
) -> bool:
    every = run.schedule.save_every
    if every is None or (state.step % every and state.step != last):
        return False
    state.history = ledger.history
    dp_state.save(run.folder, run.live, state, keep)
    return True


def _stop_if_asked(
    run: PrivateRun, state: LoopState, ledger: Ledger, keep: int | None, last: int, saved: bool
) -> None:
    """A stop requested before the last step: checkpoint this step, then raise."""
    asked = stopping.requested()
    if asked is None or state.step >= last:
        return
    if not saved:
        state.history = ledger.history
        dp_state.save(run.folder, run.live, state, keep)
    raise stopping.Interrupted(asked, f"after step {state.step}; checkpoint saved")


def _result(
    job: TrainJob, parts: Prepared, state: LoopState, resumed: int, wall: float, sampled: int,
    probe: MemoryProbe, dp: dict[str, Any],
) -> TrainResult:  # fmt: skip
    curve = tuple(state.loss_curve)
    return TrainResult(
        model=job.model,
        steps=state.step,
        epochs=round(state.step * float(dp["sample_rate"]), 6),  # expected passes
        train_rows=len(parts.rows),
        skipped_rows=parts.rows.skipped,
        resumed_from_step=resumed,
        loss_curve=curve,
        final_loss=curve[-1][1] if curve else None,
        wall_s=round(wall, 3),
        samples_per_s=round(sampled / wall, 3) if wall > 0 else 0.0,
        device=str(parts.args.device),
        world_size=1,
        output=str(job.output),
        memory=probe.measured(),
        dp=dp,
    )
