"""The training executor on the tiny random Llama: LoRA training lowers the loss, is
bit-reproducible for a seed, resumes from its last complete checkpoint, and evaluates
perplexity on completion tokens per group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import load_file

from fmlang.backends.train import checkpoints
from fmlang.backends.train.evaluate import evaluate, measure_latency
from fmlang.backends.train.job import BaseWeights, Columns, TrainJob
from fmlang.backends.train.tiny import make_tiny_causal_lm
from fmlang.backends.train.trainer import train

LORA = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"],
}


def arithmetic_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "q": f"Question: what is {i} plus {i}?",
            "a": f" Answer: {2 * i}.",
            "topic": "even" if i % 2 == 0 else "odd",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def qa_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    pq.write_table(pa.Table.from_pylist(arithmetic_rows(48)), folder / "train.parquet")
    pq.write_table(pa.Table.from_pylist(arithmetic_rows(12)), folder / "test.parquet")
    return folder


def tiny_job(model: Path, data: Path, output: Path, **training: Any) -> TrainJob:
    args = {
        "max_steps": 16,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-3,
        "save_steps": 4,
        "seed": 3,
        "logging_steps": 1,
        **training,
    }
    return TrainJob(
        model="tiny",
        task="generate",
        base=BaseWeights(kind="local", location=str(model)),
        adapter_config=LORA,
        training_args=args,
        train_data=str(data / "train.parquet"),
        eval_data={"test": str(data / "test.parquet")},
        columns=Columns(prompt="q", completion="a"),
        group_by=("topic",),
        max_seq=64,
        output_dir=str(output),
    )


def adapter_weights(output: Path) -> dict[str, Any]:
    return load_file(str(output / "adapter" / "adapter_model.safetensors"))


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].equal(b[key]), key


def test_tiny_model_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    again = make_tiny_causal_lm(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes()
    other = make_tiny_causal_lm(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (
        tiny_model / "model.safetensors"
    ).read_bytes()


def test_lora_lowers_loss_and_is_reproducible(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    first = train(tiny_job(tiny_model, qa_data, tmp_path / "a"), progress=False)
    second = train(tiny_job(tiny_model, qa_data, tmp_path / "b"), progress=False)
    assert first.steps == 16 and first.train_rows == 48
    losses = [loss for _, loss in first.loss_curve]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05
    assert first.loss_curve == second.loss_curve
    assert_same_weights(adapter_weights(tmp_path / "a"), adapter_weights(tmp_path / "b"))
    other_seed = train(tiny_job(tiny_model, qa_data, tmp_path / "c", seed=4), progress=False)
    assert other_seed.loss_curve != first.loss_curve
    recorded = json.loads((tmp_path / "a" / "train_result.json").read_text())
    assert recorded["steps"] == 16 and recorded["resumed_from_step"] == 0


def test_resume_skips_an_incomplete_checkpoint(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    """Simulate a kill while checkpoint 12 was being written: its marker is missing."""
    full = tmp_path / "full"
    train(tiny_job(tiny_model, qa_data, full), progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "adapter")
    shutil.rmtree(cut / "checkpoints" / "checkpoint-16")
    (cut / "checkpoints" / "checkpoint-12" / checkpoints.MARKER).unlink()
    result = train(tiny_job(tiny_model, qa_data, cut), progress=False)
    assert result.resumed_from_step == 8
    assert_same_weights(adapter_weights(full), adapter_weights(cut))


def test_perplexity_per_group_and_latency(tiny_model: Path, qa_data: Path, tmp_path: Path) -> None:
    job = tiny_job(tiny_model, qa_data, tmp_path / "m", max_steps=4)
    train(job, progress=False)
    metrics = evaluate(job, tmp_path / "m" / "adapter", "test")
    assert metrics["rows"] == 12 and metrics["skipped"] == 0
    assert 1.0 < metrics["perplexity"] < 1000.0  # vocabulary 1000: a random model is near it
    groups = metrics["by"]["topic"]["groups"]
    assert set(groups) == {"even", "odd"}
    assert groups["even"]["tokens"] + groups["odd"]["tokens"] == metrics["tokens"]
    gap = abs(groups["even"]["perplexity"] - groups["odd"]["perplexity"])
    assert metrics["by"]["topic"]["max_gap"]["perplexity"] == pytest.approx(gap)
    latency = measure_latency(job, tmp_path / "m" / "adapter", batch=2, seq_len=16, runs=5)
    assert latency["adapter"] == "merged" and latency["batch"] == 2
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"]
