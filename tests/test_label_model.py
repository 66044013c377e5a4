"""Majority vote and the label model: tie policies, recovery of known LF accuracies on
synthetic data, determinism, all-abstain rows, persistence, and WRENCH YouTube."""

from __future__ import annotations

import json
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
    model = fit_label_model(L, 3, epochs=30, seed=2, prior="uniform", lr=0.01)
    path = tmp_path / "label_model.json"
    model.save(path)
    loaded = type(model).load(path)
    assert loaded == model
    np.testing.assert_array_equal(loaded.predict_proba(L), model.predict_proba(L))
    text = path.read_text()
    model.save(path)
    assert path.read_text() == text
    document = json.loads(text)
    assert document["options"] == {"epochs": 30, "prior": "uniform", "seed": 2, "smoothing": 0.5}
    with pytest.raises(ValueError, match=r"fmc\.label_model"):
        type(model).from_json({**document, "version": 99})


def test_options_are_checked() -> None:
    L, _ = synthetic(100, 2, ACCURACY, COVERAGE, seed=1)
    with pytest.raises(ValueError, match="epochs"):
        fit_label_model(L, 2, epochs=0)
    with pytest.raises(ValueError, match="prior"):
        fit_label_model(L, 2, prior="learned")  # type: ignore[arg-type]
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
