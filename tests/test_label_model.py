"""Majority vote and the label model: tie policies, recovery of known LF accuracies on
synthetic data, determinism, all-abstain rows, persistence, and WRENCH YouTube."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fmlang.backends.labelmodel import fit_label_model, majority_proba, majority_vote

WRENCH = Path(__file__).resolve().parent.parent / "examples" / "youtube_spam" / "data" / "wrench"

TIES = np.array(
    [
        [0, 0, 1],  # 0 wins 2-1
        [0, 1, -1],  # tie between 0 and 1
        [-1, -1, -1],  # nobody votes
        [2, 1, 2],  # 2 wins
        [1, -1, -1],  # a single vote
    ]
)


def test_majority_tie_abstain() -> None:
    assert majority_vote(TIES, 3, tie="abstain").tolist() == [0, -1, -1, 2, 1]


def test_majority_tie_first() -> None:
    assert majority_vote(TIES, 3, tie="first").tolist() == [0, 0, 0, 2, 1]


def test_majority_tie_random_picks_among_tied_only() -> None:
    picks = {seed: majority_vote(TIES, 3, tie="random", seed=seed).tolist() for seed in range(40)}
    assert all(p[0] == 0 and p[3] == 2 and p[4] == 1 for p in picks.values())
    assert {p[1] for p in picks.values()} == {0, 1}  # never 2: it got no vote
    assert {p[2] for p in picks.values()} == {0, 1, 2}  # nobody voted: any class
    assert majority_vote(TIES, 3, tie="random", seed=7).tolist() == picks[7]


def test_majority_proba() -> None:
    proba = majority_proba(TIES, 3)
    assert proba[0].tolist() == [1, 0, 0]
    assert proba[1].tolist() == [0.5, 0.5, 0]
    np.testing.assert_allclose(proba[2], [1 / 3] * 3)


def test_bad_matrices_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        majority_vote(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="2-D"):
        majority_vote(np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="unknown tie"):
        majority_vote(TIES, 3, tie="coin")  # type: ignore[arg-type]


def synthetic(
    n: int, k: int, accuracy: list[float], coverage: list[float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn from the generative model the label model assumes: a class, then each LF
    independently fires with its coverage and, when it fires, votes the true class with its
    accuracy and a uniformly chosen wrong class otherwise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    L = np.full((n, len(accuracy)), -1)
    for j, (acc, cov) in enumerate(zip(accuracy, coverage, strict=True)):
        fires = rng.random(n) < cov
        right = rng.random(n) < acc
        wrong = (y + rng.integers(1, k, size=n)) % k
        L[:, j] = np.where(fires, np.where(right, y, wrong), -1)
    return L, y


ACCURACY = [0.95, 0.9, 0.62, 0.6, 0.58, 0.65]
COVERAGE = [0.5, 0.3, 0.7, 0.7, 0.6, 0.5]


@pytest.mark.parametrize("k", [2, 3])
def test_recovers_known_accuracies_and_beats_majority(k: int) -> None:
    L, y = synthetic(6000, k, ACCURACY, COVERAGE, seed=k)
    model = fit_label_model(L, k, seed=0)
    np.testing.assert_allclose(model.weights(), ACCURACY, atol=0.04)
    np.testing.assert_allclose(model.prior, [1 / k] * k, atol=0.03)
    ours = (model.predict(L, tie="random") == y).mean()
    majority = np.mean([(majority_vote(L, k, "random", s) == y).mean() for s in range(5)])
    assert ours > majority + 0.02, (ours, majority)


def test_estimated_prior_follows_an_unbalanced_class_mix() -> None:
    rng = np.random.default_rng(3)
    L, y = synthetic(8000, 2, ACCURACY, COVERAGE, seed=5)
    keep = (y == 0) | (rng.random(len(y)) < 0.25)  # 80% class 0
    model = fit_label_model(L[keep], 2, prior="estimated")
    uniform = fit_label_model(L[keep], 2, prior="uniform")
    assert uniform.prior == (0.5, 0.5)
    # Pulled towards uniform (the conditionals are fitted under a uniform prior), but well
    # on the side of the true 80%, and it helps.
    assert 0.6 < model.prior[0] < 0.85
    ours = (model.predict(L[keep], "first") == y[keep]).mean()
    assert ours > (uniform.predict(L[keep], "first") == y[keep]).mean()


def test_deterministic_for_a_seed() -> None:
    L, _ = synthetic(1500, 3, ACCURACY, COVERAGE, seed=11)
    first = fit_label_model(L, 3, seed=4, epochs=50)
    second = fit_label_model(L, 3, seed=4, epochs=50)
    assert json.dumps(first.to_json(), sort_keys=True) == json.dumps(
        second.to_json(), sort_keys=True
    )
    assert first.predict(L, tie="random").tolist() == second.predict(L, tie="random").tolist()


def test_all_abstain_rows() -> None:
    L, _ = synthetic(2000, 2, ACCURACY, COVERAGE, seed=2)
    L[:10] = -1
    model = fit_label_model(L, 2, prior="estimated")
    proba = model.predict_proba(L[:10])
    np.testing.assert_allclose(proba, np.tile(model.prior, (10, 1)))
    assert (model.predict(L[:10], tie="abstain") == -1).all()
    expected = int(np.argmax(model.prior))
    assert (model.predict(L[:10], tie="prior") == expected).all()
    uniform = fit_label_model(L, 2, prior="uniform")
    picks = {int(replace(uniform, seed=s).predict(L[:1], tie="random")[0]) for s in range(30)}
    assert picks == {0, 1}


def test_predict_abstain_only_where_undecided() -> None:
    L, _ = synthetic(2000, 2, ACCURACY, COVERAGE, seed=9)
    model = fit_label_model(L, 2)
    decided = model.predict(L, tie="abstain")
    voted = (L != -1).any(axis=1)
    assert (decided[~voted] == -1).all()
    assert (decided[voted] != -1).all()
    proba = model.predict_proba(L)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (decided[voted] == proba[voted].argmax(axis=1)).all()


def test_persistence_round_trip(tmp_path: Path) -> None:
    L, _ = synthetic(1500, 3, ACCURACY, COVERAGE, seed=1)
    model = fit_label_model(L, 3, epochs=30, seed=2, prior="uniform", tie="random")
    path = tmp_path / "label_model.json"
    model.save(path)
    loaded = type(model).load(path)
    assert loaded == model
    np.testing.assert_array_equal(loaded.predict_proba(L), model.predict_proba(L))
    text = path.read_text()
    model.save(path)
    assert path.read_text() == text
    document = json.loads(text)
    assert document["options"] == {
        "better_than_chance": True,
        "epochs": 30,
        "prior": "uniform",
        "seed": 2,
        "smoothing": 0.5,
        "tie": "random",
        "tolerance": 1e-5,
    }
    assert set(document["fit"]) == {
        "converged", "distinct_rows", "iterations", "last_change", "log_likelihood",
        "prior_source",
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"fmc\.label_model"):
        type(model).from_json({**document, "version": 99})


def test_options_are_checked() -> None:
    L, _ = synthetic(100, 2, ACCURACY, COVERAGE, seed=1)
    with pytest.raises(ValueError, match="epochs"):
        fit_label_model(L, 2, epochs=0)
    with pytest.raises(ValueError, match="prior"):
        fit_label_model(L, 2, prior="learned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        fit_label_model(L, 2, tolerance=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        fit_label_model(L, 2, smoothing=0.0)
    with pytest.raises(ValueError, match="tie"):
        fit_label_model(L, 2, tie="first")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fit_label_model(L, 2, lr=0.01)  # type: ignore[call-arg]
    model = fit_label_model(L, 2)
    with pytest.raises(ValueError, match="6 labeling functions"):
        model.predict(L[:, :3])


def _wrench(split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = json.loads((WRENCH / f"{split}.json").read_text(encoding="utf-8"))
    ordered = [rows[key] for key in sorted(rows, key=int)]
    return (
        np.array([row["weak_labels"] for row in ordered]),
        np.array([row["label"] for row in ordered]),
    )


def test_youtube_ours_at_least_majority_vote() -> None:
    train, _ = _wrench("train")
    test, gold = _wrench("test")
    model = fit_label_model(train, 2, seed=0)
    seeds = range(10)
    ours = np.mean([(replace(model, seed=s).predict(test, "random") == gold).mean() for s in seeds])
    majority = np.mean([(majority_vote(test, 2, "random", s) == gold).mean() for s in seeds])
    assert ours >= majority, (ours, majority)


def imbalanced(seed: int, *, single_polarity: bool) -> tuple[np.ndarray, np.ndarray]:
    """The issue's setting: 800 rows, 13% positives, 6 conditionally independent
    better-than-chance LFs. Two-sided LFs fire at a class-independent rate (0.1-0.6) and
    vote the true class with accuracy 0.55-0.95; single-polarity ones (alternating
    classes) fire on their class more often than on the other."""
    rng = np.random.default_rng(seed)
    y = (rng.random(800) < 0.13).astype(int)
    L = np.full((800, 6), -1)
    for j in range(6):
        accuracy, coverage = rng.uniform(0.55, 0.95), rng.uniform(0.1, 0.6)
        if single_polarity:
            hit = rng.uniform(0.2, 0.8)
            false_hit = hit * rng.uniform(0.05, 0.5)
            fires = np.where(y == j % 2, rng.random(800) < hit, rng.random(800) < false_hit)
            L[:, j] = np.where(fires, j % 2, -1)
        else:
            fires = rng.random(800) < coverage
            right = rng.random(800) < accuracy
            L[:, j] = np.where(fires, np.where(right, y, 1 - y), -1)
    return L, y


def covered_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    covered = pred != -1
    return float((pred[covered] == y[covered]).mean())


@pytest.mark.parametrize(
    ("seed", "single_polarity"), [(15, False), (38, False), (92, False), (25, True), (82, True)]
)
def test_imbalanced_fit_does_not_collapse(seed: int, single_polarity: bool) -> None:
    """Matrices on which the previous fit (prior held at 1/k during EM, class-dependent
    firing for every LF) fell to 0.12-0.13 covered accuracy (every row labelled with the
    minority class), where majority vote reaches 0.73-0.97."""
    L, y = imbalanced(seed, single_polarity=single_polarity)
    model = fit_label_model(L, 2)
    ours = covered_accuracy(model.predict(L), y)
    majority = covered_accuracy(majority_vote(L, 2), y)
    assert model.converged
    assert ours > 0.5
    assert ours >= majority - 0.05, (ours, majority)
    assert model.prior[1] < 0.4  # 13% positives: not the minority class's takeover


def test_convergence_is_reported() -> None:
    L, _ = imbalanced(1, single_polarity=False)
    short = fit_label_model(L, 2, epochs=2)
    assert (short.converged, short.iterations) == (False, 2)
    assert short.last_change > short.tolerance
    full = fit_label_model(L, 2)
    assert full.converged and 2 < full.iterations < full.epochs
    assert full.last_change < full.tolerance
    assert full.to_json()["fit"]["converged"] is True
    loose = fit_label_model(L, 2, tolerance=1e-2)
    assert loose.converged and loose.iterations < full.iterations


def test_distinct_rows_fit_equals_the_full_matrix() -> None:
    """The distinct rows are fitted once, weighted by their counts: the same matrix with
    its rows shuffled gives the same parameters, and predictions map back to every row."""
    L, _ = synthetic(3000, 2, ACCURACY, COVERAGE, seed=4)
    model = fit_label_model(L, 2)
    assert model.distinct_rows <= 3**6 < len(L)
    order = np.random.default_rng(0).permutation(len(L))
    again = fit_label_model(L[order], 2)
    np.testing.assert_array_equal(again.predict(L[order]), model.predict(L)[order])
    np.testing.assert_allclose(again.theta, model.theta, atol=1e-9)
    np.testing.assert_allclose(again.prior, model.prior, atol=1e-9)


def test_better_than_chance_excludes_the_swapped_solution() -> None:
    """Started from swapped labels (every row's majority vote inverted), unconstrained EM
    settles on the mirror image (every LF voting against its class, 17% accuracy); the
    constrained fit cannot (it stalls where the votes carry no class, which is why EM
    starts from majority vote)."""
    from fmlang.backends.labelmodel.em import encode, run_em
    from fmlang.backends.labelmodel.model import majority_start

    L, y = synthetic(3000, 2, ACCURACY, COVERAGE, seed=8)
    votes = encode(L, 2, 0.5)
    start, mix = majority_start(votes)
    options = {"epochs": 500, "tolerance": 1e-5, "smoothing": 0.5, "estimate_prior": True}
    accuracy = {}
    for constrained in (True, False):
        fit = run_em(votes, start[:, ::-1].copy(), mix[::-1].copy(), constrained=constrained,
                     **options)  # type: ignore[arg-type]  # fmt: skip
        labels = fit.posterior.argmax(axis=1)[votes.inverse]
        voted = (L != -1).any(axis=1)
        accuracy[constrained] = float((labels[voted] == y[voted]).mean())
        if constrained:
            for v in range(2):
                assert (fit.theta[:, v, v] >= fit.theta[:, 1 - v, v] - 1e-12).all()
    assert accuracy[False] < 0.3, accuracy
    assert accuracy[True] > 0.45, accuracy


def test_seed_settles_random_ties_only() -> None:
    """Under a uniform prior, a row with no vote ties every class: `tie = random` picks
    with the seed (the same seed, the same picks); the fit itself ignores the seed."""
    L = np.array([[0, 1], [1, 0], [0, 0], [1, -1], [-1, -1]] * 40)
    model = fit_label_model(L, 2, tie="random", seed=1, prior="uniform")
    ties = L[-1:].repeat(30, axis=0)
    picks = {tuple(replace(model, seed=s).predict(ties).tolist()) for s in range(5)}
    assert len(picks) > 1
    assert model.predict(ties).tolist() == model.predict(ties).tolist()
    assert (fit_label_model(L, 2, prior="uniform").predict(ties) == -1).all()
    assert fit_label_model(L, 2, tie="random", seed=9, prior="uniform").theta == model.theta


def test_majority_comparison_fires_on_a_model_worse_than_majority() -> None:
    """FM0760: with gold, a label model wrong where majority vote is right beyond noise; and
    without gold, one that contradicts majority vote on most rows it decides."""
    from fmlang.backends.labelmodel.review import review, worse_error

    L, y = synthetic(2000, 2, ACCURACY, COVERAGE, seed=3)
    majority = majority_vote(L, 2)
    flipped = np.where(majority == -1, -1, 1 - majority)  # an adversarial labelling
    with_gold = review(L, 2, flipped, y)
    assert with_gold.worse_on_gold
    found = worse_error(with_gold, "spam", None)
    assert found is not None and found.code == "FM0760"
    assert "worse than majority vote against @gold" in found.message
    without = review(L, 2, flipped, None)
    assert without.contradicts_majority and not without.worse_on_gold
    assert worse_error(without, "spam", None) is not None
    model = fit_label_model(L, 2)
    fine = review(L, 2, model.predict(L), y)
    assert worse_error(fine, "spam", None) is None
    assert fine.accuracy_covered is not None and fine.majority_accuracy_covered is not None
    assert fine.accuracy_covered >= fine.majority_accuracy_covered


def test_large_sparse_matrix() -> None:
    """20,000 rows x 40 sparse LFs, nearly every row distinct: the sparse E- and M-steps
    fit it (benchmarks/label_model_speed.py times 50,000 x 73)."""
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.3).astype(int)
    fires = rng.random((20_000, 40)) < 0.08
    right = rng.random((20_000, 40)) < 0.8
    L = np.where(fires, np.where(right, y[:, None], 1 - y[:, None]), -1)
    model = fit_label_model(L, 2)
    assert model.converged
    assert model.distinct_rows > 10_000
    assert covered_accuracy(model.predict(L), y) > 0.8
    np.testing.assert_allclose(model.weights(), 0.8, atol=0.05)


STAGE_SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
    gold: label[ham, spam] @gold
  }
  grant read, label to "team:a"
}

labels l on c {
  classes [ham, spam]
  lf link:  text ~ /https?:/i -> spam
  lf sub:   lower(text) contains "subscribe" -> spam
  lf short: words(text) < 4 -> ham
  lf song:  lower(text) contains "song" -> ham
  model label_model(epochs = 300)
}
"""
STAGE_TEXTS = [
    ("check http://x.io now", "spam"),
    ("subscribe to my channel http://y.io", "spam"),
    ("please subscribe to me friends", "spam"),
    ("nice song", "ham"),
    ("love this song so much", "ham"),
    ("great video", "ham"),
    ("this song has http://z.io in it", "ham"),
    ("subscribe", "spam"),
]


def _stage_project(tmp_path: Path) -> Path:
    from tests.data_helpers import write_csv

    rows = [[str(i), *STAGE_TEXTS[i % len(STAGE_TEXTS)]] for i in range(160)]
    write_csv(tmp_path / "c.csv", ["id", "text", "gold"], rows)
    spec = tmp_path / "s.fm"
    spec.write_text(STAGE_SPEC, encoding="utf-8")
    return spec


def test_stage_reports_convergence_and_majority_vote(tmp_path: Path) -> None:
    from tests.data_helpers import run_spec

    spec = _stage_project(tmp_path)
    run_spec(spec, tmp_path / "b", principal="team:a")
    analysis = json.loads((tmp_path / "b/run/labels/l.analysis.json").read_text())
    versus = analysis["versus_majority"]
    assert versus["fit"]["converged"] is True and versus["fit"]["iterations"] >= 1
    assert versus["worse_than_majority"] is False
    assert versus["covered"] == 160 and versus["gold_rows"] == 160
    # Majority vote leaves the 60 tied rows unlabelled (1.0 on the rest); the label model
    # labels them too (right on 40 of them).
    assert versus["majority_covered"] == 100 and versus["majority_accuracy_covered"] == 1.0
    assert versus["accuracy_covered"] >= 0.85
    paired = versus["paired"]
    assert paired["compared"] == 160 and paired["ours_right"] == 140
    assert paired["majority_right_expected"] == 100 + 60 / 2  # ties by a fair coin
    model = json.loads((tmp_path / "b/run/labels/l.model.json").read_text())
    assert model["fit"]["converged"] is True
    assert model["options"]["epochs"] == 300


def test_stage_fails_when_the_label_model_loses_to_majority_vote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit whose classes come out swapped (an adversarial stand-in for any collapse) is
    FM0760 against @gold, and no labels are written."""
    from fmlang.backends.labelmodel import model as model_module
    from fmlang.errors import StageError
    from tests.data_helpers import run_spec

    fit = model_module.fit_label_model

    def swapped(L: object, k: int, **options: object) -> object:
        fitted = fit(L, k, **options)  # type: ignore[arg-type]
        theta = tuple(tuple(reversed(lf)) for lf in fitted.theta)
        return replace(fitted, theta=theta, prior=fitted.prior[::-1])

    monkeypatch.setattr(model_module, "fit_label_model", swapped)
    spec = _stage_project(tmp_path)
    with pytest.raises(StageError) as failure:
        run_spec(spec, tmp_path / "b", principal="team:a")
    assert [d.code for d in failure.value.diagnostics] == ["FM0760"]
    assert "worse than majority vote against @gold" in failure.value.diagnostics[0].message
    assert not (tmp_path / "b/run/labels/l.parquet").exists()


def test_a_refusal_names_a_setting_that_passes_and_it_does(tmp_path: Path) -> None:
    """The YouTube example's 15 correlated functions under `model label_model`: EM's
    estimated prior drifts and the fit loses to majority vote (FM0760); the help names
    `prior = uniform`, refitted and reviewed before the error, and the block written as the
    help says runs."""
    import shutil

    from fmlang.errors import StageError
    from tests.data_helpers import run_spec

    example = Path(__file__).resolve().parent.parent / "examples" / "youtube_spam"
    shutil.copytree(example, tmp_path / "yt", ignore=shutil.ignore_patterns(".fm-build"))
    spec = tmp_path / "yt" / "spam.fm"
    text = spec.read_text(encoding="utf-8")
    majority = "model majority(tie = abstain)"
    assert f"\n  {majority}\n" in text, "the example changed: update the test"
    spec.write_text(text.replace(majority, "model label_model(tie = abstain)"))
    with pytest.raises(StageError) as failure:
        run_spec(spec, tmp_path / "b", principal="team:trust-safety")
    (refusal,) = failure.value.diagnostics
    assert refusal.code == "FM0760"
    fix = re.search(r"`(model label_model\([^`]*\))` passes this check", refusal.help or "")
    assert fix is not None, refusal.help
    assert fix.group(1) == "model label_model(tie = abstain, prior = uniform)"
    assert not (tmp_path / "b/run/labels/spam.parquet").exists()
    spec.write_text(text.replace(majority, fix.group(1)))
    run_spec(spec, tmp_path / "b", principal="team:trust-safety")
    versus = json.loads((tmp_path / "b/run/labels/spam.analysis.json").read_text())
    assert versus["versus_majority"]["worse_than_majority"] is False


def test_the_alternative_is_tried_only_where_the_block_differs() -> None:
    """`alternative` refits with a setting the block does not hold and returns it with its
    passing review; a block already on every alternative has nothing to try, and a refusal
    without one keeps the plain help."""
    from fmlang.backends.labelmodel.review import alternative, review, worse_error

    L, y = synthetic(600, 2, ACCURACY, COVERAGE, seed=4)
    found = alternative(L, 2, y, {"tie": "abstain"})
    assert found is not None
    assert found.options == {"tie": "abstain", "prior": "uniform"}
    assert found.source() == "model label_model(tie = abstain, prior = uniform)"
    assert not found.review.worse_on_gold
    assert alternative(L, 2, y, {"prior": "uniform"}) is None
    majority = majority_vote(L, 2)
    flipped = review(L, 2, np.where(majority == -1, -1, 1 - majority), y)
    plain = worse_error(flipped, "spam", None)
    assert plain is not None and "passes this check" not in (plain.help or "")
    named = worse_error(flipped, "spam", None, found)
    assert named is not None and (named.help or "").startswith(f"`{found.source()}` passes")
    blind = alternative(L, 2, None, {})  # no gold: held to agreeing with majority vote
    assert blind is not None and blind.review.gold_rows == 0
    contradicting = review(L, 2, np.where(majority == -1, -1, 1 - majority), None)
    told = worse_error(contradicting, "spam", None, blind)
    assert told is not None and "agrees with majority vote on" in (told.help or "")


def test_a_narrow_matrix_is_read_in_place_and_fits_as_int64() -> None:
    """The labels stage hands over int8 matrices (`labeling.label_matrix`): the checks take
    them as they are, without an int64 copy, and every fit and prediction is the one the
    int64 matrix gives."""
    from fmlang.backends.labelmodel.matrix import check_matrix

    rng = np.random.default_rng(5)
    wide = rng.integers(-1, 3, size=(2_000, 9)).astype(np.int64)
    narrow = wide.astype(np.int8)
    assert check_matrix(narrow, 3) is narrow
    one, other = fit_label_model(narrow, 3), fit_label_model(wide, 3)
    assert one == other
    assert (one.predict(narrow) == other.predict(wide)).all()
    assert (majority_vote(narrow, 3) == majority_vote(wide, 3)).all()
    with pytest.raises(ValueError, match="outside"):
        check_matrix(np.array([[3]], dtype=np.int8), 3)
