"""Early stopping for a job with `early_stopping` (a model selection candidate's).

`EarlyStopping.checks` times over the run (every `max_steps / checks` optimizer steps, and
never before the first) the callback measures the mean loss on the job's early-stopping
split: the classifier's cross-entropy against the gold labels, or the generative model's
completion-token loss, on at most `max_rows` rows read once up front. When the loss has not
improved on its best for `patience` checks in a row, training ends at that step the way a
stop request ends it (`control.should_training_stop`, as `trainer.stop_callback` does for
SIGINT), and the adapter saved is the one at the stop. `report()` records every check, the
best and where training stopped: the run's metrics keep it (`train.early_stopping`).

Only the transformers Trainer loop stops early; the DP-SGD and FishMask loops train every
planned step (a DP run's budget is spent by the plan, and FishMask has its own loop), and
the report says so. A run resumed from a checkpoint starts counting patience again.
"""

from __future__ import annotations

from typing import Any

from fmlang.backends.train.data import (
    Collator,
    classify_examples,
    generate_examples,
    read_table,
)
from fmlang.backends.train.job import EarlyStopping, TrainJob


def callback(job: TrainJob, tokenizer: Any) -> Any:
    """The TrainerCallback for `job` (which must have `early_stopping`)."""
    from transformers import TrainerCallback

    assert job.early_stopping is not None
    settings: EarlyStopping = job.early_stopping
    rows = _rows(job, tokenizer, settings.split)[: settings.max_rows]
    collate = Collator(tokenizer.pad_token_id)

    class StopWhenNoBetter(TrainerCallback):
        def __init__(self) -> None:
            self.checks: list[dict[str, float]] = []
            self.best: float | None = None
            self.since_best = 0
            self.stopped_at: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            every = max(1, state.max_steps // settings.checks)
            if not rows or state.global_step % every or state.global_step >= state.max_steps:
                return
            loss = mean_loss(kwargs["model"], rows, collate)
            self.checks.append({"step": state.global_step, "loss": loss})
            if self.best is None or loss < self.best:
                self.best, self.since_best = loss, 0
            else:
                self.since_best += 1
            if self.since_best >= settings.patience:
                self.stopped_at = state.global_step
                control.should_training_stop = True

        def report(self) -> dict[str, Any]:
            return {"split": settings.split, "patience": settings.patience, "rows": len(rows),
                    "checks": self.checks, "best_loss": self.best,
                    "stopped_at": self.stopped_at}  # fmt: skip

    return StopWhenNoBetter()


def not_available(job: TrainJob, loop: str) -> dict[str, Any] | None:
    """What a loop without early stopping reports for a job that asked for it."""
    if job.early_stopping is None:
        return None
    return {"split": job.early_stopping.split, "stopped_at": None,
            "why": f"the {loop} loop trains every planned step"}  # fmt: skip


def _rows(job: TrainJob, tokenizer: Any, split: str) -> list[dict[str, Any]]:
    path = job.eval_data.get(split)
    if path is None:
        return []
    table = read_table(job, path, "early-stopping data")
    if job.task == "generate":
        return list(generate_examples(job, tokenizer, table).rows)
    gold = job.columns.gold
    return list(classify_examples(job, tokenizer, table, gold).rows) if gold else []


def mean_loss(model: Any, rows: list[dict[str, Any]], collate: Any, batch: int = 32) -> float:
    """The model's loss on `rows`, weighted by rows, in eval mode (restored afterwards)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch):
                part = rows[start : start + batch]
                inputs = {k: v.to(device) for k, v in collate(part).items()}
                total += float(model(**inputs).loss) * len(part)
    finally:
        model.train(was_training)
    return total / len(rows)
