"""Evaluate a trained model on one of its job's evaluation splits, and time it.

`evaluate(job, adapter_dir, split)`: classify → accuracy, per-class precision/recall/F1,
macro F1 and the confusion matrix against the gold label column; generate → perplexity on
completion tokens (and each row's summed NLL and token count, `per_row`, from which the
gates bootstrap an interval). Both again per value of each `group_by` column, with the
largest gap between groups per metric. `measure_latency` times forward passes at a given
batch and sequence length on this machine, after a warm-up, in inference mode.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fmlang.backends.train.data import (
    IGNORE_INDEX,
    Collator,
    Examples,
    classify_examples,
    generate_examples,
    read_table,
    require_columns,
)
from fmlang.backends.train.fisher import apply_diff, is_fisher_folder, load_diff
from fmlang.backends.train.job import TrainJob
from fmlang.backends.train.loader import load_model, load_tokenizer
from fmlang.backends.train.metrics import (
    by_group,
    classification_metrics,
    percentile,
    perplexity_metrics,
)
from fmlang.diagnostics import error
from fmlang.errors import StageError

EVAL_BATCH = 32


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_trained(job: TrainJob, adapter_dir: Path, merge: bool = False) -> Any:
    """The base model with the trained adapter (merged into it when `merge` and the adapter
    kind allows it), or a fully fine-tuned model folder; in eval mode on the device."""
    from peft import PeftModel

    if (
        not (adapter_dir / "config.json").is_file()
        and not (adapter_dir / "adapter_config.json").is_file()
    ):
        raise StageError(
            error(
                "FM0829",
                f"no trained adapter or model of `{job.model}` at {adapter_dir}",
                job.span("model"),
                "this model",
                help="train it first (`fmc run`), or pass the folder that training wrote",
            )
        )
    if is_fisher_folder(adapter_dir):  # a sparse diff of the base (FishMask)
        diff = load_diff(adapter_dir, job.span("adapter"), job.model)
        model = apply_diff(load_model(job), diff, job.span("adapter"), job.model)
    elif (adapter_dir / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(load_model(job), adapter_dir)
        if merge and hasattr(model, "merge_and_unload") and _mergeable(model):
            model = model.merge_and_unload()
    else:
        model = load_model(job, source=str(adapter_dir))
    return model.to(_device()).eval()


def _mergeable(model: Any) -> bool:
    return not bool(getattr(model.peft_config[model.active_adapter], "is_prompt_learning", False))


def _split_path(job: TrainJob, split: str) -> str:
    if split not in job.eval_data:
        raise StageError(
            error(
                "FM0830",
                f"`{job.model}` has no evaluation split `{split}`",
                job.span("eval"),
                "its evaluation splits are listed here",
                help=f"evaluate one of: {', '.join(sorted(job.eval_data)) or '(none)'}",
            )
        )
    return job.eval_data[split]


def _batches(rows: list[dict[str, Any]], pad_id: int) -> Any:
    collate = Collator(pad_id)
    for start in range(0, len(rows), EVAL_BATCH):
        batch = collate(rows[start : start + EVAL_BATCH])
        yield {k: v.to(_device()) for k, v in batch.items()}


def _evaluate_classify(
    job: TrainJob, model: Any, tokenizer: Any, table: dict[str, list[Any]]
) -> dict[str, Any]:
    import torch

    assert job.columns.gold is not None
    require_columns(job, table, list(job.group_by), "evaluation data")
    examples = classify_examples(job, tokenizer, table, job.columns.gold)
    predicted: list[int] = []
    with torch.inference_mode():
        for batch in _batches(list(examples.rows), tokenizer.pad_token_id):
            batch.pop("labels")
            predicted.extend(model(**batch).logits.argmax(dim=-1).tolist())
    gold = [int(row["labels"]) for row in examples.rows]

    def compute(indices: list[int]) -> dict[str, Any]:
        return classification_metrics(
            [gold[i] for i in indices], [predicted[i] for i in indices], job.classes
        )

    return _with_groups(job, table, examples, compute)


def _with_groups(
    job: TrainJob, table: dict[str, list[Any]], examples: Examples, compute: Any
) -> dict[str, Any]:
    """Overall metrics, rows left out, and the metrics per value of each `group_by` column."""
    everything = list(range(len(examples)))
    result = {**compute(everything), "skipped": examples.skipped}
    result["by"] = {
        col: by_group([table[col][i] for i in examples.indices], everything, compute)
        for col in job.group_by
    }
    return result


def _evaluate_generate(
    job: TrainJob, model: Any, tokenizer: Any, table: dict[str, list[Any]]
) -> dict[str, Any]:
    import torch

    require_columns(job, table, list(job.group_by), "evaluation data")
    examples = generate_examples(job, tokenizer, table)
    nll: list[float] = []
    tokens: list[int] = []
    with torch.inference_mode():
        for batch in _batches(list(examples.rows), tokenizer.pad_token_id):
            row_nll, row_tokens = _completion_nll(model, batch)
            nll.extend(row_nll)
            tokens.extend(row_tokens)

    def compute(indices: list[int]) -> dict[str, Any]:
        return perplexity_metrics([nll[i] for i in indices], [tokens[i] for i in indices])

    result = _with_groups(job, table, examples, compute)
    # per row, for the gates' bootstrap interval (gates.py); a confusion matrix is all a
    # classifier's interval needs, so classification keeps no per-row arrays
    result["per_row"] = {"nll": nll, "tokens": tokens}
    return result


def _completion_nll(model: Any, batch: dict[str, Any]) -> tuple[list[float], list[int]]:
    """Summed next-token NLL over each row's completion tokens, and how many there are."""
    import torch

    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets.clamp(min=0), reduction="none"
    )
    return (losses * mask).sum(dim=1).tolist(), mask.sum(dim=1).tolist()


def evaluate(job: TrainJob, adapter_dir: Path, split_name: str) -> dict[str, Any]:
    """Metrics of the trained model on `split_name` (one of the job's `eval_data`)."""
    table = read_table(job, _split_path(job, split_name), "evaluation data")
    tokenizer = load_tokenizer(job)
    model = load_trained(job, adapter_dir)
    if job.task == "generate":
        metrics = _evaluate_generate(job, model, tokenizer, table)
    else:
        metrics = _evaluate_classify(job, model, tokenizer, table)
    return {"model": job.model, "split": split_name, "task": job.task, **metrics}


def measure_latency(
    job: TrainJob, adapter_dir: Path, batch: int, seq_len: int, runs: int = 50, warmup: int = 5
) -> dict[str, Any]:
    """Wall-clock milliseconds of one forward pass over `batch` × `seq_len` tokens (for a
    causal LM: the prefill, not decoding), LoRA-style adapters merged into the weights."""
    import torch

    model = load_trained(job, adapter_dir, merge=True)
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(
        low=min(10, vocab - 1), high=vocab, size=(batch, seq_len), generator=generator
    )
    inputs = {"input_ids": ids.to(_device()), "attention_mask": torch.ones_like(ids).to(_device())}
    times = _timed_runs(model, inputs, runs, warmup)
    return {
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "mean_ms": sum(times) / len(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "batch": batch,
        "seq_len": seq_len,
        "runs": runs,
        "warmup": warmup,
        "adapter": _adapter_state(adapter_dir, model),
        "device": str(_device()),
        "threads": torch.get_num_threads(),
    }


def _timed_runs(model: Any, inputs: dict[str, Any], runs: int, warmup: int) -> list[float]:
    import torch

    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            started = time.perf_counter()
            model(**inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return times


def _adapter_state(adapter_dir: Path, model: Any) -> str:
    """`merged` (weights folded in), `unmerged` (a prompt adapter runs beside the model) or
    `none` (a fully fine-tuned model)."""
    if not (adapter_dir / "adapter_config.json").is_file():
        return "none"
    return "unmerged" if hasattr(model, "peft_config") else "merged"
