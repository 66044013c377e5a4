"""Our label model: a Dawid–Skene generative model fitted by EM without gold labels (see
`em.py`), its predictions under a tie policy, and its parameters as deterministic JSON.

`fit_label_model` takes the options the `.fm` language accepts for
`model label_model(epochs = …, tolerance = …, smoothing = …, prior = …,
better_than_chance = …, tie = …, seed = …)`:

- `epochs`: the most EM iterations; EM stops earlier once no row's class probability moves
  by more than `tolerance` between iterations, and the fit records whether it did;
- `smoothing`: pseudo-counts added to every (LF, class, vote) count: larger values pull
  rare votes' conditionals towards uniform;
- `prior`: `estimated` (the class prior is re-estimated in every M-step under a Dirichlet
  prior centred on majority vote's class mix, worth 5% of the rows) or `uniform` (held at
  1/k). An estimate that
  collapses (a class that majority vote gives a share of the rows gets under a tenth of
  that share) is replaced by majority vote's smoothed class mix and the model refitted
  under it; `prior_source` says which prior the fit used;
- `better_than_chance` (default true): every LF's vote for a class is at least as likely
  under that class as under any other; false lifts the constraint;
- `tie`: what an exact tie between classes on a row with votes becomes: `abstain` (no
  label), `random` (a pick among the tied classes, settled by `seed`: the same seed gives
  the same picks) or `prior` (the tied class with the larger prior). EM has no learning
  rate and the fit itself draws no random numbers, so `seed` matters only with `random`.

Predictions weigh the abstentions' log-likelihood by ABSTAIN_EVIDENCE = 0.25 beside the
votes'. Under class-dependent firing an abstention is evidence (a ham keyword that fires on
most ham rows and is silent is a sign of spam): ignoring it entirely, as Snorkel's
LabelModel does, left 1-2 of 100 random matrices 10+ points under majority vote
(benchmarks/label_model_random.py and the issue's 13%-positive matrices). But on real LF
sets abstentions are far from independent (short rows silence most LFs at once): the full
posterior labelled 14 fewer of the YouTube example's 1,109 covered rows right than
abstain-blind scoring. A quarter weight keeps the first at none and the example at the
abstain-blind figure; WRENCH YouTube's test split loses 2 of 250 rows to abstain-blind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmlang.atomic import write_text_atomic
from fmlang.backends.labelmodel.em import (
    DEFAULT_TOLERANCE,
    Votes,
    encode,
    log_scores,
    run_em,
    softmax,
)
from fmlang.backends.labelmodel.matrix import (
    ABSTAIN,
    FloatArray,
    IntArray,
    check_matrix,
    decide,
    tied_classes,
    vote_counts,
)

PriorKind = Literal["uniform", "estimated"]
PriorSource = Literal["uniform", "estimated", "majority_vote"]
PredictTie = Literal["abstain", "random", "prior"]
FORMAT = "fmc.label_model"
FORMAT_VERSION = 2
DEFAULT_EPOCHS = 1000
DEFAULT_SMOOTHING = 0.5
COLLAPSE_RATIO = 0.1
"""An estimated class prior below this fraction of majority vote's share of a class is a
collapse (see the module docstring)."""
ABSTAIN_EVIDENCE = 0.25
"""The weight of the abstentions' log-likelihood in predictions (see the module docstring)."""
MIN_CLASS_SHARE = 0.01
"""Classes majority vote gives less than this share of its decided rows are not guarded."""


@dataclass(frozen=True)
class LabelModel:
    """Fitted parameters: `theta[j][y][v]` = P(LF j emits v | class y), v over the k
    classes then abstain; `prior[y]` = P(class y); `lf_weights[j]`: 1 / the size of LF
    j's group of near-copies (`em.dependency_weights`); the options it was fitted with and
    how the fit ended."""

    k: int
    theta: tuple[tuple[tuple[float, ...], ...], ...]
    prior: tuple[float, ...]
    lf_weights: tuple[float, ...]
    prior_kind: PriorKind
    prior_source: PriorSource
    seed: int
    tie: PredictTie
    epochs: int
    tolerance: float
    smoothing: float
    better_than_chance: bool
    iterations: int
    converged: bool
    last_change: float
    log_likelihood: float
    distinct_rows: int

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

    def _scores(self, matrix: IntArray) -> FloatArray:
        """(rows, k): log prior + the log-likelihood of each row's votes under each class,
        plus ABSTAIN_EVIDENCE x that of its abstentions; computed once per distinct row."""
        theta, prior = self._arrays()
        votes = encode(matrix, self.k, self.smoothing, np.asarray(self.lf_weights))
        blind = log_scores(votes, theta, prior, abstains=False)
        full = log_scores(votes, theta, prior, abstains=True)
        distinct = blind + ABSTAIN_EVIDENCE * (full - blind)
        return np.asarray(distinct[votes.inverse], dtype=np.float64)

    def predict_proba(self, L: object) -> FloatArray:
        """(rows, k): the posterior over classes given each row's votes."""
        return softmax(self._scores(self._checked(L)))

    def predict(self, L: object, tie: PredictTie | None = None) -> IntArray:
        """The most probable class per row. `tie` (default: the model's own) settles exact
        ties: -1 under `abstain`, a pick among the tied classes with the model's seed under
        `random`, the tied class with the larger prior (then the lower index) under
        `prior`. Rows where every LF abstains are -1 under `abstain` and get their
        posterior's most probable class otherwise."""
        matrix = self._checked(L)
        scores = self._scores(matrix)
        no_votes = (matrix == ABSTAIN).all(axis=1)
        policy = self.tie if tie is None else tie
        return decide(scores, policy, seed=self.seed, prior=self._arrays()[1], no_votes=no_votes)

    def label(self, L: object) -> IntArray:
        """The labels stage's labels: `predict` under the model's own `tie`, and -1 on every
        row where all LFs abstain (whatever the tie policy: those rows stay unlabelled)."""
        matrix = self._checked(L)
        best = self.predict(matrix)
        best[(matrix == ABSTAIN).all(axis=1)] = ABSTAIN
        return best

    def weights(self) -> FloatArray:
        """Per LF, its learned accuracy: P(vote = true class | the LF voted)."""
        theta, prior = self._arrays()
        diagonal = theta[:, np.arange(self.k), np.arange(self.k)]
        correct = diagonal @ prior
        fired = (1.0 - theta[:, :, self.k]) @ prior
        return np.asarray(correct / fired, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": "dawid_skene_em",
            "k": self.k,
            "theta": [[list(row) for row in lf] for lf in self.theta],
            "prior": list(self.prior),
            "lf_weights": list(self.lf_weights),
            "options": {
                "better_than_chance": self.better_than_chance,
                "epochs": self.epochs,
                "prior": self.prior_kind,
                "seed": self.seed,
                "smoothing": self.smoothing,
                "tie": self.tie,
                "tolerance": self.tolerance,
            },
            "fit": {
                "converged": self.converged,
                "distinct_rows": self.distinct_rows,
                "iterations": self.iterations,
                "last_change": self.last_change,
                "log_likelihood": self.log_likelihood,
                "prior_source": self.prior_source,
            },
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
            lf_weights=tuple(float(w) for w in document["lf_weights"]),
            prior_kind=options["prior"],
            prior_source=fit["prior_source"],
            seed=int(options["seed"]),
            tie=options["tie"],
            epochs=int(options["epochs"]),
            tolerance=float(options["tolerance"]),
            smoothing=float(options["smoothing"]),
            better_than_chance=bool(options["better_than_chance"]),
            iterations=int(fit["iterations"]),
            converged=bool(fit["converged"]),
            last_change=float(fit["last_change"]),
            log_likelihood=float(fit["log_likelihood"]),
            distinct_rows=int(fit["distinct_rows"]),
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
    tolerance: float = DEFAULT_TOLERANCE,
    smoothing: float = DEFAULT_SMOOTHING,
    prior: PriorKind = "estimated",
    better_than_chance: bool = True,
    tie: PredictTie = "abstain",
    seed: int = 0,
) -> LabelModel:
    """Fit the label model on a label matrix without gold labels (see the module's
    docstring for what each option does)."""
    _check_options(epochs, tolerance, smoothing, prior, tie, seed)
    matrix = check_matrix(L, k)
    votes = encode(matrix, k, smoothing)
    start, mv_mix = majority_start(votes)
    estimate = prior == "estimated"
    source: PriorSource = prior
    options = {
        "epochs": epochs,
        "tolerance": tolerance,
        "smoothing": smoothing,
        "constrained": better_than_chance,
    }
    initial = mv_mix if estimate else np.full(k, 1.0 / k)
    result = run_em(votes, start, initial, estimate_prior=estimate, **options)  # type: ignore[arg-type]
    if estimate and collapsed(result.prior, votes):
        source = "majority_vote"
        result = run_em(votes, start, mv_mix, estimate_prior=False, **options)  # type: ignore[arg-type]
    return LabelModel(
        k=k,
        theta=_nested(result.theta),
        prior=tuple(float(p) for p in result.prior),
        lf_weights=tuple(float(w) for w in votes.lf_weights),
        prior_kind=prior,
        prior_source=source,
        seed=seed,
        tie=tie,
        epochs=epochs,
        tolerance=tolerance,
        smoothing=smoothing,
        better_than_chance=better_than_chance,
        iterations=result.iterations,
        converged=result.converged,
        last_change=result.last_change,
        log_likelihood=result.log_likelihood,
        distinct_rows=votes.n_distinct,
    )


def majority_start(votes: Votes) -> tuple[FloatArray, FloatArray]:
    """EM's start: each distinct row's majority-vote posterior (mass split evenly among the
    tied classes), rows with no vote at majority vote's class mix; and that mix, the
    majority-vote posteriors summed over the rows with a vote, one pseudo-row per class."""
    counts = vote_counts(votes.rows, votes.k)
    tied = tied_classes(counts).astype(np.float64)
    start = tied / tied.sum(axis=1, keepdims=True)
    voted = counts.sum(axis=1) > 0
    mass = (votes.weights[voted, None] * start[voted]).sum(axis=0) + 1.0
    mix = mass / mass.sum()
    start[~voted] = mix
    return np.asarray(start, dtype=np.float64), np.asarray(mix, dtype=np.float64)


def collapsed(prior: FloatArray, votes: Votes) -> bool:
    """Whether the estimated prior all but drops a class that majority vote (strict
    winners only) gives at least MIN_CLASS_SHARE of the rows it decides."""
    counts = vote_counts(votes.rows, votes.k)
    strict = tied_classes(counts).sum(axis=1) == 1
    strict &= counts.sum(axis=1) > 0
    if not strict.any():
        return False
    winners = counts[strict].argmax(axis=1)
    shares = np.bincount(winners, weights=votes.weights[strict], minlength=votes.k)
    shares = shares / shares.sum()
    return bool(((shares >= MIN_CLASS_SHARE) & (prior < COLLAPSE_RATIO * shares)).any())


def _check_options(
    epochs: int, tolerance: float, smoothing: float, prior: str, tie: str, seed: int
) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 < tolerance <= 0.1:
        raise ValueError(f"tolerance must be above 0 and at most 0.1, got {tolerance}")
    if not 0 < smoothing <= 1000:
        raise ValueError(f"smoothing must be above 0 and at most 1,000, got {smoothing}")
    if prior not in ("uniform", "estimated"):
        raise ValueError(f"prior must be 'uniform' or 'estimated', got {prior!r}")
    if tie not in ("abstain", "random", "prior"):
        raise ValueError(f"tie must be 'abstain', 'random' or 'prior', got {tie!r}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")


def _nested(theta: FloatArray) -> tuple[tuple[tuple[float, ...], ...], ...]:
    return tuple(tuple(tuple(float(p) for p in row) for row in lf) for lf in theta)
