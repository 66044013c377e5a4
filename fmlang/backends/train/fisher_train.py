"""`train_fisher(job)`: the FishMask training loop, in place of the Trainer for a job whose
adapter is `fisher_mask` (see `fisher.py` for the method and the stored diff).

1. The model, tokenizer and rows come from `trainer.prepare` (no PEFT adapter is attached).
2. The Fisher information is estimated on `num_samples` training rows drawn with the run's
   seed, one row per backward pass (the sum of squared per-row gradients, not the square
   of a batch's), in eval mode so that dropout does not enter the estimate.
3. The global top `k = round(density x base parameters)` entries form the mask. Each
   masked tensor gets a trainable fp32 delta of its `k_t` entries; the forward pass runs
   on `base + scatter(delta)` through `torch.func.functional_call` (tied weights stay
   tied), so the base tensors never change and the optimizer (AdamW, weight decay on the
   deltas off: decay would pull the update, not the weight, to zero) keeps state only for
   the `k` deltas and the head. Backward still computes each masked tensor's full
   gradient before gathering its `k_t` entries: the cost model prices that
   (`fmlang.verify.training`).
4. The Trainer's arguments drive the loop: epochs or max_steps, batch and gradient
   accumulation, learning rate, warmup and schedule, gradient clipping, seed.

A killed run restarts from the start (no checkpoints are written for this loop), and a
warm start (`fmc rebase`) is refused (FM0872): the diff belongs to its base's weights. The
final diff, `adapter_config.json` and `train_result.json` are written as every run's are.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from typing import Any

from fmlang.atomic import json_text, write_text_atomic
from fmlang.backends import stopping
from fmlang.backends.cache import writing
from fmlang.backends.train.data import Collator
from fmlang.backends.train.fisher import (
    CONFIG_FILE,
    SparseDiff,
    SparseEntry,
    candidates,
    fisher_information,
    save_diff,
    top_k_mask,
    with_deltas,
)
from fmlang.backends.train.job import TrainJob
from fmlang.backends.train.memory import PROFILED_STEPS, MemoryProbe
from fmlang.backends.train.trainer import Prepared, TrainResult, final_folder, prepare
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

DEFAULT_SAMPLES = 256


@dataclass
class Masked:
    """The model with its mask: base parameters by name, their masks, the trainable deltas
    and the head parameters that train in full."""

    model: Any
    indices: dict[str, Any]
    deltas: dict[str, Any]
    head: dict[str, Any]
    base_params: int

    def forward(self, batch: dict[str, Any]) -> Any:
        from torch.func import functional_call

        params = self.model_params()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return functional_call(self.model, params, args=(), kwargs=inputs).logits

    def model_params(self) -> dict[str, Any]:
        named = dict(self.model.named_parameters())
        return {n: with_deltas(named[n], i, self.deltas[n]) for n, i in self.indices.items()}

    def trainable(self) -> list[Any]:
        return [*self.deltas.values(), *self.head.values()]


def _head_modules(job: TrainJob) -> tuple[str, ...]:
    assert job.adapter_config is not None
    return tuple(job.adapter_config.get("modules_to_save") or ())


def _loss(job: TrainJob, logits: Any, labels: Any) -> Any:
    from fmlang.backends.train.dp import per_row_losses

    return per_row_losses(job.task, logits, labels).mean()


def build_mask(job: TrainJob, parts: Prepared, device: Any) -> Masked:
    """Estimate the Fisher information, select the top k and set up the deltas."""
    import torch

    assert job.adapter_config is not None
    model = parts.model.to(device)
    head_names = _head_modules(job)
    base = candidates(model, head_names)
    head = {n: p for n, p in model.named_parameters() if n not in base}
    base_params = sum(p.numel() for p in base.values())
    k = round(float(job.adapter_config["density"]) * base_params)
    samples = int(job.adapter_config.get("num_samples") or DEFAULT_SAMPLES)
    chosen = random.Random(int(parts.args.seed)).sample(
        range(len(parts.rows)), min(samples, len(parts.rows))
    )
    collate = Collator(parts.tokenizer.pad_token_id)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()

    def loss_of(row: dict[str, Any]) -> Any:
        batch = {key: v.to(device) for key, v in collate([row]).items()}
        inputs = {key: v for key, v in batch.items() if key != "labels"}
        return _loss(job, model(**inputs).logits, batch["labels"])

    fisher = fisher_information(base, (parts.rows[i] for i in sorted(chosen)), loss_of)
    indices = top_k_mask(fisher, k)
    del fisher
    for p in base.values():
        p.requires_grad_(False)
    deltas = {
        n: torch.zeros(i.numel(), dtype=torch.float32, device=device, requires_grad=True)
        for n, i in indices.items()
    }
    indices = {n: i.to(device) for n, i in indices.items()}
    return Masked(model, indices, deltas, head, base_params)


def _optimizer(args: Any, masked: Masked) -> Any:
    import torch

    groups = [{"params": list(masked.deltas.values()), "weight_decay": 0.0}]
    if masked.head:
        groups.append({"params": list(masked.head.values()), "weight_decay": args.weight_decay})
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )


def _steps(args: Any, rows: int) -> tuple[int, int, int]:
    """(batch, accumulation, optimizer steps) from the Trainer's arguments."""
    batch = int(args.per_device_train_batch_size)
    accumulate = int(args.gradient_accumulation_steps)
    per_epoch = max(1, math.ceil(rows / batch) // accumulate)
    steps = int(args.max_steps)
    if steps <= 0:
        steps = max(1, math.ceil(float(args.num_train_epochs) * per_epoch))
    return batch, accumulate, steps


def _batches(rows: int, batch: int, seed: int) -> Any:
    """Row indices in batches, reshuffled every epoch (seeded), forever."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(rows, generator=generator).tolist()
        for start in range(0, rows, batch):
            yield order[start : start + batch]


def _loop(
    job: TrainJob, parts: Prepared, masked: Masked, device: Any, probe: MemoryProbe
) -> list[tuple[int, float]]:
    import torch
    from transformers import get_scheduler

    args = parts.args
    batch, accumulate, steps = _steps(args, len(parts.rows))
    optimizer = _optimizer(args, masked)
    warmup = args.get_warmup_steps(steps)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, warmup, steps)
    collate = Collator(parts.tokenizer.pad_token_id)
    batches = _batches(len(parts.rows), batch, int(args.data_seed or args.seed))
    log_every = max(1, int(args.logging_steps)) if args.logging_steps >= 1 else 10
    masked.model.train()
    curve: list[tuple[int, float]] = []
    pending: list[float] = []
    probe.steps_started(masked.model)
    for step in range(1, steps + 1):
        for _ in range(accumulate):
            rows = collate([parts.rows[i] for i in next(batches)])
            rows = {k: v.to(device) for k, v in rows.items()}
            loss = _loss(job, masked.forward(rows), rows["labels"]) / accumulate
            loss.backward()
            pending.append(float(loss.detach()) * accumulate)
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(masked.trainable(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        _measure(probe, masked, optimizer, step)
        if step % log_every == 0 or step == steps:
            curve.append((step, round(sum(pending) / len(pending), 6)))
            pending.clear()
        stopping.check(f"after step {step}")
    probe.steps_done()
    return curve


def _measure(probe: MemoryProbe, masked: Masked, optimizer: Any, step: int) -> None:
    """The memory terms the cost model predicts, read off the objects after the first step
    (the deltas are not parameters of the model, so the probe's own count would miss them),
    and the profiled peak over the first steps."""
    if step == 1:
        probe.count_terms(masked.model, optimizer)
        probe.terms["trainable"] = sum(t.numel() * t.element_size() for t in masked.trainable())
    if step >= PROFILED_STEPS:
        probe.steps_done()


def train_fisher(job: TrainJob, progress: bool, probe: MemoryProbe) -> TrainResult:
    """Train `job`'s fisher_mask update; save the sparse diff and `train_result.json`."""
    import torch

    if job.warm_start is not None:
        raise StageError(_no_warm_start(job))
    parts = prepare(job, progress)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stopping.check("before training started")
    started = time.perf_counter()
    masked = build_mask(job, parts, device)
    probe.training_started()
    curve = _loop(job, parts, masked, device, probe)
    wall = time.perf_counter() - started
    batch, accumulate, steps = _steps(parts.args, len(parts.rows))
    with writing(f"training `{job.model}`"):
        save_masked(job, masked)
    result = TrainResult(
        model=job.model,
        steps=steps,
        epochs=round(steps * batch * accumulate / len(parts.rows), 6),
        train_rows=len(parts.rows),
        skipped_rows=parts.rows.skipped,
        resumed_from_step=0,
        loss_curve=tuple(curve),
        final_loss=curve[-1][1] if curve else None,
        wall_s=round(wall, 3),
        samples_per_s=round(steps * batch * accumulate / wall, 3) if wall > 0 else 0.0,
        device=str(device),
        world_size=1,
        output=str(job.output),
        memory=probe.measured(),
    )
    write_text_atomic(job.output / "train_result.json", result.to_json())
    return result


def _no_warm_start(job: TrainJob) -> Diagnostic:
    return error(
        "FM0872",
        f"`{job.model}` cannot be rebased: its fisher_mask update is a sparse diff of the old "
        "base's own weights, and its mask was chosen by their Fisher information",
        job.span("adapter"),
        "a fisher_mask adapter",
        help="retrain the model on the new base (`fmc run` after changing its base), which "
        "estimates a new mask there",
    )


def masked_diff(masked: Masked) -> SparseDiff:
    """The trained update as a sparse diff (entries whose delta stayed 0 are kept: the
    mask is the method's, and its size is what the cost model priced)."""
    named = dict(masked.model.named_parameters())
    sparse = {
        n: SparseEntry(i.cpu(), masked.deltas[n].detach().cpu()) for n, i in masked.indices.items()
    }
    full = {n: p.detach().cpu() for n, p in masked.head.items()}
    shapes = {n: tuple(named[n].shape) for n in [*sparse, *full]}
    return SparseDiff(sparse, full, shapes)


def save_masked(job: TrainJob, masked: Masked) -> None:
    """The diff and its config into `<output>/adapter/`, swapped in whole."""
    assert job.adapter_config is not None
    target = final_folder(job)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    diff = masked_diff(masked)
    save_diff(staging, diff)
    config = {**job.adapter_config, "selected": diff.changed, "base_params": masked.base_params}
    write_text_atomic(staging / CONFIG_FILE, json_text(dict(sorted(config.items()))))
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
