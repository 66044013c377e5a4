"""Confidence intervals of the runtime gates (`backends/confidence.py`, `backends/gates.py`)
and `with confidence` in the language: interval values against known ones, the seeded
bootstrap, a borderline pass that the interval turns into a fail, the small-data warning,
parsing, formatting, the IR, the checker, the LSP, and one run through a tiny model."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmlang.backends import confidence as ci
from fmlang.backends.gates import check_gates, evaluate_gates, interval_text
from fmlang.backends.train.metrics import by_group, classification_metrics, perplexity_metrics
from fmlang.ir.nodes import Spec

EXAMPLE = Path(__file__).parent.parent / "examples" / "youtube_spam"
CLASSES = ["ham", "spam"]


# ---- the intervals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.27753),  # Wilson's textbook cases (Newcombe 1998, Brown et al. 2001)
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (174, 186, 0.89063, 0.96271),  # the YouTube demo's test split
    ],
)
def test_wilson_interval_against_known_values(
    correct: int, n: int, low: float, high: float
) -> None:
    interval = ci.wilson(correct, n, 0.95)
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-5)
    assert interval.method == "wilson" and interval.n == n


def test_wilson_interval_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for correct, n, level in [(174, 186, 0.95), (33, 39, 0.9), (1, 7, 0.99), (45, 45, 0.95)]:
        expected = stats.binomtest(correct, n).proportion_ci(level, method="wilson")
        interval = ci.wilson(correct, n, level)
        assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))


def _predictions(n: int, correct: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Gold labels and predictions of which exactly `correct` agree."""
    rng = random.Random(seed)
    gold = [rng.randrange(2) for _ in range(n)]
    wrong = set(rng.sample(range(n), n - correct))
    return gold, [1 - g if i in wrong else g for i, g in enumerate(gold)]


def test_matrix_metrics_equal_the_point_metrics() -> None:
    gold, pred = _predictions(120, 97, seed=3)
    point = classification_metrics(gold, pred, CLASSES)
    matrices = np.asarray([point["confusion"]["matrix"]])
    assert ci.matrix_metric(matrices, "accuracy", CLASSES)[0] == pytest.approx(point["accuracy"])
    assert ci.matrix_metric(matrices, "macro_f1", CLASSES)[0] == pytest.approx(point["macro_f1"])
    for cls in CLASSES:
        for name in ("precision", "recall", "f1"):
            value = ci.matrix_metric(matrices, f"{name}[{cls}]", CLASSES)[0]
            assert value == pytest.approx(point["per_class"][cls][name])


def test_the_bootstrap_is_seeded_and_resamples_rows() -> None:
    gold, pred = _predictions(186, 170, seed=1)
    values = classification_metrics(gold, pred, CLASSES)
    first = ci.classification_interval(values, "f1[spam]")
    assert first == ci.classification_interval(values, "f1[spam]")  # same seed, same interval
    assert first is not None and first.method == "bootstrap" and first.n == 186
    assert first.low < values["per_class"]["spam"]["f1"] < first.high
    # drawing the confusion matrix from a multinomial is resampling the rows: the same
    # interval, up to Monte Carlo error, as resampling (gold, pred) pairs one by one
    rng = np.random.default_rng(7)
    pairs = np.asarray([gold, pred])
    rows = rng.integers(0, len(gold), size=(4000, len(gold)))
    f1 = [
        classification_metrics(pairs[0, r].tolist(), pairs[1, r].tolist(), CLASSES)["per_class"][
            "spam"
        ]["f1"]
        for r in rows[:1000]
    ]
    low, high = np.quantile(f1, [0.025, 0.975])
    assert (first.low, first.high) == pytest.approx((low, high), abs=0.015)


def _groups(sizes_correct: dict[str, tuple[int, int]]) -> dict[str, Any]:
    gold: list[int] = []
    pred: list[int] = []
    video: list[str] = []
    for seed, (name, (n, correct)) in enumerate(sizes_correct.items()):
        g, p = _predictions(n, correct, seed)
        gold, pred, video = gold + g, pred + p, video + [name] * n

    def compute(indices: list[int]) -> dict[str, Any]:
        return classification_metrics(
            [gold[i] for i in indices], [pred[i] for i in indices], CLASSES
        )

    everything = list(range(len(gold)))
    return {**compute(everything), "by": {"video": by_group(video, everything, compute)}}


def test_gap_interval_resamples_within_groups() -> None:
    values = _groups({"a": (39, 33), "b": (32, 32), "c": (45, 43)})
    groups = values["by"]["video"]["groups"]
    gap = values["by"]["video"]["max_gap"]["accuracy"]
    interval = ci.gap_interval(groups, "accuracy")
    assert interval is not None and interval == ci.gap_interval(groups, "accuracy")
    assert interval.low <= gap <= interval.high and interval.n == 116
    assert ci.gap_interval({"a": groups["a"]}, "accuracy") is None  # one group: no gap
    # a group at 100% has no resampling spread, but its own (Wilson) interval is not empty
    assert ci.group_intervals(groups, "accuracy")["b"].low < 0.9


def test_perplexity_interval_from_per_row_losses() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 30, size=60).tolist()
    nll = [t * float(rng.uniform(1.5, 3.0)) for t in tokens]
    point = perplexity_metrics(nll, tokens)["perplexity"]
    interval = ci.perplexity_interval({"nll": nll, "tokens": tokens})
    assert interval is not None and interval.low < point < interval.high
    assert interval == ci.perplexity_interval({"nll": nll, "tokens": tokens})
    assert ci.perplexity_interval(None) is None and ci.perplexity_interval({"nll": []}) is None


# ---- the gates ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compile_constraints(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The YouTube example with its constraints block replaced by the lines given."""
    from fmlang.api import check_paths, compile_spec

    def compile_with(lines: str) -> tuple[Spec, Any]:
        folder = tmp_path_factory.mktemp("spam")
        shutil.copytree(EXAMPLE / "data", folder / "data")
        text = (EXAMPLE / "spam.fm").read_text(encoding="utf-8")
        head, _, rest = text.partition("constraints spam_filter {")
        _, _, tail = rest.partition("\n}\n")
        spec = folder / "spam.fm"
        spec.write_text(f"{head}constraints spam_filter {{\n{lines}\n}}\n{tail}", "utf-8")
        result = check_paths([spec], verify=False)
        return (compile_spec(result) if result.ok else None), result

    return compile_with


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    return {"eval": {"comments.test": values}}


def test_with_confidence_turns_a_borderline_pass_into_a_fail(compile_constraints: Any) -> None:
    gold, pred = _predictions(186, 174)  # 93.5%: above 0.9, but its 95% interval is not
    metrics = _metrics(classification_metrics(gold, pred, CLASSES))
    plain, _ = compile_constraints("  accuracy >= 0.90 on comments.test")
    (gate,) = evaluate_gates(plain, "spam_filter", metrics)
    assert gate.passed is True and gate.interval is not None
    assert gate.interval.low < 0.9 < gate.interval.high
    assert "inconclusive" in interval_text(gate.to_json())

    strict, _ = compile_constraints("  accuracy >= 0.90 on comments.test with confidence 95%")
    assert strict.constraints_on("spam_filter")[0].confidence == 0.95
    (diagnostic,) = check_gates(strict, "spam_filter", metrics)
    assert diagnostic.code == "FM0860"
    assert "95% interval [0.8906, 0.9627] (Wilson, 186 rows)" in diagnostic.message
    assert "required its lower end >= 0.9 (with confidence 95%)" in diagnostic.message
    record = metrics["gates"][0]
    assert record["passed"] is False and record["decided_by"] == "interval"
    assert record["ci_low"] == pytest.approx(0.89063, abs=1e-5) and record["n"] == 186
    assert record["method"] == "wilson" and record["confidence"] == 0.95

    loose, _ = compile_constraints("  accuracy >= 0.85 on comments.test with confidence 95%")
    assert check_gates(loose, "spam_filter", metrics) == []  # the interval clears 0.85


def test_a_gap_gate_warns_about_groups_too_small(compile_constraints: Any) -> None:
    spec, _ = compile_constraints("  max_gap(accuracy, by = video) <= 0.2 on comments.test")
    small = _metrics(_groups({"Psy": (39, 33), "Katy": (32, 32), "Eminem": (45, 43)}))
    diagnostics = check_gates(spec, "spam_filter", small)
    assert [d.code for d in diagnostics] == ["FM0862"]  # passes, but one group is too small
    assert "`video = Psy` (39 rows, interval [0.7027, 0.9275], 0.2248 wide)" in (
        diagnostics[0].message
    )
    (record,) = small["gates"]
    assert record["passed"] is True and record["method"] == "bootstrap"
    assert [g["group"] for g in record["too_small"]] == ["video = Psy"]
    large = _metrics(_groups({"Psy": (390, 330), "Katy": (320, 318), "Eminem": (450, 430)}))
    assert check_gates(spec, "spam_filter", large) == []  # the same rates on 10× the rows


def test_a_split_too_small_for_its_bound_is_warned(compile_constraints: Any) -> None:
    spec, _ = compile_constraints("  f1(spam) >= 0.95 on comments.test")
    gold, pred = _predictions(60, 59)
    diagnostics = check_gates(
        spec, "spam_filter", _metrics(classification_metrics(gold, pred, CLASSES))
    )
    assert [d.code for d in diagnostics] == ["FM0862"]
    assert "`comments.test` (60 rows" in diagnostics[0].message
    assert "(0.95..1)" in diagnostics[0].message


def test_confidence_without_per_row_results_is_not_checked(compile_constraints: Any) -> None:
    spec, _ = compile_constraints("  accuracy >= 0.5 on comments.test with confidence 90%")
    old = _metrics({"rows": 10, "accuracy": 0.9})  # written before intervals: no matrix
    (diagnostic,) = check_gates(spec, "spam_filter", old)
    assert diagnostic.code == "FM0861" and "fmc run --force" in diagnostic.message


# ---- the language -------------------------------------------------------------------------


def test_parse_format_round_trip() -> None:
    from fmlang.fmt import format_text

    written = (
        "constraints m {\n  accuracy>=0.9 on d.test   with  confidence 95%\n"
        "  max_gap(f1, by = g) <= 0.1 on d.test with confidence 0.9  # a note\n}\n"
    )
    formatted = format_text(written, "t.fm").text
    assert "  accuracy >= 0.9 on d.test with confidence 95%\n" in formatted
    assert "  max_gap(f1, by = g) <= 0.1 on d.test with confidence 0.9  # a note\n" in formatted
    assert format_text(formatted, "t.fm").text == formatted


def test_with_is_still_a_setting_name() -> None:
    from fmlang.syntax.parser import parse

    assert not parse("model m {\n  epochs = 3\n  with = 4\n}\n", "t.fm").diagnostics


def test_checker_refuses_bad_levels_words_and_kinds(compile_constraints: Any) -> None:
    _, result = compile_constraints(
        "  accuracy >= 0.9 on comments.test with confidence 100%\n"
        "  accuracy >= 0.9 on comments.test with certainty 95%\n"
        "  latency.p95 <= 50ms on cpu_2core with confidence 95%\n"
        "  perplexity <= 12 on comments.test with confidence 0.5"
    )
    codes = sorted(d.code for d in result.diagnostics if d.code in ("FM0347", "FM0348", "FM0349"))
    assert codes == ["FM0347", "FM0348", "FM0348", "FM0349"]


def test_lsp_completes_and_explains_confidence() -> None:
    from lsprotocol import types

    from fmlang.lsp.completion import complete
    from fmlang.lsp.hover import _confidence_text
    from fmlang.lsp.positions import LineIndex

    def labels(text: str) -> set[str]:
        lines = text.split("\n")
        position = types.Position(len(lines) - 1, len(lines[-1]))
        return {item.label for item in complete(text, LineIndex(text), position, None)}

    head = "constraints m {\n"
    assert "with confidence" in labels(head + "  accuracy >= 0.9 on d.test ")
    assert "with confidence" not in labels(head + "  latency.p95 <= 9ms on cpu_2core ")
    assert "confidence" in labels(head + "  accuracy >= 0.9 on d.test with ")
    assert "whole 95% confidence interval" in _confidence_text("quality", 0.95)
    assert _confidence_text("memory", None) == ""


# ---- through a run ------------------------------------------------------------------------


def test_a_tiny_model_run_reports_a_perplexity_interval(tmp_path: Path, tiny_model: Path) -> None:
    from tests.data_helpers import run_spec
    from tests.test_run_train import project

    spec = project(tmp_path, tiny_model, "100000")
    spec.write_text(
        spec.read_text().replace("on tickets.test\n}", "on tickets.test with confidence 90%\n}")
    )
    run_spec(spec, tmp_path / "build", until="train")
    metrics = json.loads((tmp_path / "build/run/models/helper/metrics.json").read_text())
    test = metrics["eval"]["tickets.test"]
    assert len(test["per_row"]["nll"]) == len(test["per_row"]["tokens"]) == test["rows"]
    (gate,) = metrics["gates"]
    assert gate["method"] == "bootstrap" and gate["confidence"] == 0.9
    assert gate["n"] == test["rows"] and gate["decided_by"] == "interval"
    assert gate["ci_low"] <= test["perplexity"] <= gate["ci_high"] < 100000
    assert gate["passed"] is True
