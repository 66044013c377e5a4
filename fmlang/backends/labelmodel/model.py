"""Our label model: a Dawid–Skene generative model fitted by EM without gold labels (see
`em.py`), its predictions under a tie policy, and its parameters as deterministic JSON.

`fit_label_model` takes the options the `.fm` language accepts for
`model label_model(epochs = …, lr = …, seed = …, prior = …)`:

- `epochs`: the most EM iterations (it stops earlier once the posteriors stop moving);
- `lr`: accepted for the language's sake and ignored, since EM has no learning rate;
- `seed`: the fit itself is deterministic; the seed settles `predict(tie="random")` ties;
- `prior`: `uniform`, or `estimated`: after fitting, the class mix of the rows where at
  least one LF voted that makes their votes most likely under the fitted model. The
  conditionals themselves are fitted under a uniform prior, so on very unbalanced data the
  estimate is pulled towards uniform; refitting them under the estimated mix (alternating)
  drifted to a wrong, lopsided mix on WRENCH YouTube, where LFs are far from independent.

Predictions score only the votes that fired (abstain-blind, as Snorkel's LabelModel does):
abstentions are fitted but their correlations across LFs (many LFs are silent on the same
short rows) would otherwise swamp the votes. A row where every LF abstains gets the prior.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmlang.atomic import write_text_atomic
from fmlang.backends.labelmodel.em import TOLERANCE, log_scores, run_em, softmax
from fmlang.backends.labelmodel.majority import majority_proba
from fmlang.backends.labelmodel.matrix import (
    ABSTAIN,
    FloatArray,
    IntArray,
    check_matrix,
    decide,
    one_hot,
)

PriorKind = Literal["uniform", "estimated"]
PredictTie = Literal["abstain", "random", "prior"]
FORMAT = "fmc.label_model"
FORMAT_VERSION = 1
DEFAULT_EPOCHS = 100
DEFAULT_SMOOTHING = 0.5
PRIOR_ITERATIONS = 500


@dataclass(frozen=True)
class LabelModel:
    """Fitted parameters: `theta[j][y][v]` = P(LF j emits v | class y), v over the k
    classes then abstain; `prior[y]` = P(class y)."""

    k: int
    theta: tuple[tuple[tuple[float, ...], ...], ...]
    prior: tuple[float, ...]
    prior_kind: PriorKind
    seed: int
    epochs: int
    smoothing: float
    iterations: int
    converged: bool

    @property
    def n_lfs(self) -> int:
        return len(self.theta)

    def _arrays(self) -> tuple[FloatArray, FloatArray]:
        return np.asarray(self.theta, dtype=np.float64), np.asarray(self.prior, np.float64)

    def _checked(self, L: object) -> IntArray:
        matrix = check_matrix(L, self.k)
        if matrix.shape[1] != self.n_lfs:
            raise ValueError(
                f"the model was fitted on {self.n_lfs} labeling functions, "
                f"the matrix has {matrix.shape[1]} columns"
            )
        return matrix

    def predict_proba(self, L: object) -> FloatArray:
        """(rows, k): the posterior over classes given each row's votes."""
        theta, prior = self._arrays()
        votes = one_hot(self._checked(L), self.k)
        return softmax(log_scores(votes, theta, prior, abstains=False))

    def predict(self, L: object, tie: PredictTie = "abstain") -> IntArray:
        """The most probable class per row. Exact ties, and rows where every LF abstains,
        are -1 under `abstain`; `random` picks among the tied classes with the model's seed;
        `prior` picks the tied class with the larger prior (then the lower index)."""
        matrix = self._checked(L)
        theta, prior = self._arrays()
        scores = log_scores(one_hot(matrix, self.k), theta, prior, abstains=False)
        no_votes = (matrix == ABSTAIN).all(axis=1)
        return decide(scores, tie, seed=self.seed, prior=prior, no_votes=no_votes)

    def weights(self) -> FloatArray:
        """Per LF, its learned accuracy: P(vote = true class | the LF voted)."""
        theta, prior = self._arrays()
        correct = np.einsum("y,myy->m", prior, theta[:, :, : self.k])
        fired = np.einsum("y,my->m", prior, 1.0 - theta[:, :, self.k])
        return np.asarray(correct / fired, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": "dawid_skene_em",
            "k": self.k,
            "theta": [[list(row) for row in lf] for lf in self.theta],
            "prior": list(self.prior),
            "options": {
                "epochs": self.epochs,
                "prior": self.prior_kind,
                "seed": self.seed,
                "smoothing": self.smoothing,
            },
            "fit": {"converged": self.converged, "iterations": self.iterations},
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LabelModel:
        if document.get("format") != FORMAT or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} document")
        options, fit = document["options"], document["fit"]
        return cls(
            k=int(document["k"]),
            theta=tuple(
                tuple(tuple(float(p) for p in row) for row in lf) for lf in document["theta"]
            ),
            prior=tuple(float(p) for p in document["prior"]),
            prior_kind=options["prior"],
            seed=int(options["seed"]),
            epochs=int(options["epochs"]),
            smoothing=float(options["smoothing"]),
            iterations=int(fit["iterations"]),
            converged=bool(fit["converged"]),
        )

    def save(self, path: Path) -> None:
        """Write the parameters as sorted, stable JSON, atomically."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True)
        write_text_atomic(path, text + "\n")

    @classmethod
    def load(cls, path: Path) -> LabelModel:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def fit_label_model(
    L: object,
    k: int,
    *,
    epochs: int = DEFAULT_EPOCHS,
    lr: float | None = None,
    seed: int = 0,
    prior: PriorKind = "estimated",
    smoothing: float = DEFAULT_SMOOTHING,
) -> LabelModel:
    """Fit the label model on a label matrix without gold labels (see the module's
    docstring for what each option does; `lr` is ignored)."""
    _check_options(epochs, lr, seed, prior, smoothing)
    matrix = check_matrix(L, k)
    votes = one_hot(matrix, k)
    class_prior = np.full(k, 1.0 / k)
    result = run_em(
        votes, majority_proba(matrix, k), class_prior, epochs=epochs, smoothing=smoothing
    )
    if prior == "estimated":
        class_prior = _class_mix(matrix, votes, result.theta, class_prior)
    return LabelModel(
        k=k,
        theta=_nested(result.theta),
        prior=tuple(float(p) for p in class_prior),
        prior_kind=prior,
        seed=seed,
        epochs=epochs,
        smoothing=smoothing,
        iterations=result.iterations,
        converged=result.converged,
    )


def _check_options(epochs: int, lr: float | None, seed: int, prior: str, smoothing: float) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if lr is not None and lr < 0:
        raise ValueError(f"lr must not be negative, got {lr}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")
    if prior not in ("uniform", "estimated"):
        raise ValueError(f"prior must be 'uniform' or 'estimated', got {prior!r}")
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")


def _class_mix(
    matrix: IntArray, votes: FloatArray, theta: FloatArray, start: FloatArray
) -> FloatArray:
    """The maximum-likelihood class mix of the rows with a vote under the fitted
    conditionals (abstain-blind scores; concave in the mix, solved by EM on the mix
    alone), smoothed by one pseudo-row per class."""
    k = theta.shape[1]
    prior_now = start
    voted = (matrix != ABSTAIN).any(axis=1)
    if not voted.any():
        return prior_now
    rows = int(voted.sum())
    for _ in range(PRIOR_ITERATIONS):
        posterior = softmax(log_scores(votes[voted], theta, prior_now, abstains=False))
        updated = (posterior.sum(axis=0) + 1.0) / (rows + k)
        if np.abs(updated - prior_now).max() < TOLERANCE:
            return np.asarray(updated, dtype=np.float64)
        prior_now = updated
    return np.asarray(prior_now, dtype=np.float64)


def _nested(theta: FloatArray) -> tuple[tuple[tuple[float, ...], ...], ...]:
    return tuple(tuple(tuple(float(p) for p in row) for row in lf) for lf in theta)
