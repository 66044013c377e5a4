"""The privacy side of DP-SGD: what a `dp { … }` block promises, and the accounting.

`privacy_plan` turns the block and the run's shape into the DP-SGD mechanism: the Poisson
sample rate `q` (the expected logical batch over the training rows), the number of steps,
and the Gaussian noise multiplier that opacus' RDP accountant says spends at most
`epsilon` at `delta` over those steps (`get_noise_multiplier`). `Ledger` is that
accountant during the run: one entry per optimizer step, saved with every checkpoint, and
asked before training how many more steps fit in the budget, so a run never takes a step
that would spend more than the spec allows.

Refused before any work (each with a diagnostic at the `dp` block):
- FM0832: opacus is not installed;
- FM0828: settings DP-SGD cannot honour: several processes, packing (a packed row mixes
  several examples, so one example is no longer one sampled unit), the chunked loss,
  activation checkpointing (recomputed layers would record their inputs twice),
  a step inside the backward pass, fp16 loss scaling, compile; and a base whose
  trainable layers opacus cannot give per-sample gradients;
- FM0837: a budget no noise can meet: no `epsilon`, `delta` of 1/rows or more (such a
  delta allows publishing a row outright), or an epsilon too small for the steps.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Any

from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

ACCOUNTANT = "rdp"
DEFAULT_DELTA = 1e-5  # and never above a tenth of 1/rows
DEFAULT_MAX_GRAD_NORM = 1.0
EPSILON_TOLERANCE = 0.01  # how far below the budget the calibrated noise may land
# RDP orders: opacus' defaults (up to 63) and a few higher ones, which bound epsilon more
# tightly where little is spent; each order gives a valid bound and the least is taken
ALPHAS = (*(1 + x / 10.0 for x in range(1, 100)), *range(12, 64), 80, 96, 128, 192, 256, 512)


def refuse_unsupported(job: TrainJob) -> None:
    """Every setting the DP-SGD loop cannot honour, at once, before any work."""
    if job.dp is None:
        return
    found = [_cannot(job, what, fix) for what, fix in _conflicts(job)]
    if importlib.util.find_spec("opacus") is None:
        found.append(
            error(
                "FM0832",
                f"DP-SGD in `{job.model}` needs the `opacus` package, which is not installed",
                job.span("train.dp", "train"),
                "DP-SGD is requested here",
                help="install it with `pip install 'fmlang[train]'` (or `pip install opacus`)",
            )
        )
    if job.dp.epsilon is None:
        found.append(
            _budget(
                job,
                f"`{job.model}` asks for DP-SGD without an `epsilon`",
                "add `epsilon = N` to the `dp { ... }` block: the noise is calibrated to it",
            )
        )
    if found:
        raise StageError(*found)


def _conflicts(job: TrainJob) -> list[tuple[str, str]]:
    memory, args, out = job.memory, job.training_args, []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        out.append(("training on several processes", "train on one device (`devices = 1`)"))
    if memory.packing:
        out.append(("`packing`", "remove `packing = true`: each example must be its own row"))
    if memory.chunked_loss:
        out.append(("`chunked_loss`", "remove `chunked_loss = true`"))
    if memory.checkpointing != "off":
        out.append((f"`checkpointing = {memory.checkpointing}`", "set `checkpointing = off`"))
    if memory.optimizer_in_backward:
        out.append(("`optimizer_in_backward`", "remove `optimizer_in_backward = true`"))
    if args.get("fp16"):
        out.append(("`precision = fp16`", "use `precision = bf16` or `fp32`"))
    if memory.compile or args.get("torch_compile"):
        out.append(("`compile`", "remove `compile = true`"))
    return out


def _cannot(job: TrainJob, what: str, fix: str, notes: tuple[str, ...] = ()) -> Diagnostic:
    return error(
        "FM0828",
        f"DP-SGD cannot train `{job.model}` with {what}",
        job.span("train.dp", "train"),
        "DP-SGD is requested here",
        help=fix,
        notes=(*notes, "fmc never trains without the privacy it was asked for"),
    )


def unsupported_layers(job: TrainJob, exc: Exception) -> StageError:
    """opacus found a trainable layer it cannot compute per-sample gradients for."""
    return StageError(
        _cannot(
            job,
            "these trainable layers",
            "train an adapter (`adapter lora(...)`) instead of the full model, or freeze "
            "the layers the note names",
            (f"opacus: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}",),
        )
    )


def _budget(job: TrainJob, message: str, fix: str, notes: tuple[str, ...] = ()) -> Diagnostic:
    return error(
        "FM0837",
        message,
        job.span("train.dp", "train"),
        "the privacy budget",
        help=fix,
        notes=notes,
    )


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD mechanism of one run: every step samples each row with probability
    `sample_rate`, clips each row's gradient to `max_grad_norm` and adds Gaussian noise of
    standard deviation `noise_multiplier * max_grad_norm` to their sum."""

    epsilon: float
    delta: float
    max_grad_norm: float
    rows: int
    expected_batch: int
    sample_rate: float
    steps: int
    noise_multiplier: float

    def summary(self) -> dict[str, Any]:
        return {
            "accountant": ACCOUNTANT,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "rows": self.rows,
            "expected_batch": self.expected_batch,
            "sample_rate": self.sample_rate,
            "planned_steps": self.steps,
            "noise_multiplier": self.noise_multiplier,
        }


def delta_of(job: TrainJob, rows: int) -> float:
    """The spec's delta, else 1e-5 (at most a tenth of 1/rows)."""
    assert job.dp is not None
    return job.dp.delta if job.dp.delta is not None else min(DEFAULT_DELTA, 0.1 / rows)


def privacy_plan(job: TrainJob, rows: int, logical_batch: int, steps: int) -> PrivacyPlan:
    """Calibrate the noise so that `steps` Poisson-sampled steps of an expected
    `logical_batch` rows (at most all of them) spend at most the job's epsilon."""
    assert job.dp is not None and job.dp.epsilon is not None
    delta, epsilon = delta_of(job, rows), job.dp.epsilon
    if delta >= 1 / rows:
        raise StageError(
            _budget(
                job,
                f"`delta = {delta:g}` is not below 1/{rows}, one over the training rows of "
                f"`{job.model}`",
                f"use a delta well below {1 / rows:.2g}, e.g. `delta = {0.1 / rows:.0e}`",
                ("with delta >= 1/rows, publishing one row at random is already (0, delta)-DP",),
            )
        )
    expected = min(logical_batch, rows)
    rate = expected / rows
    try:
        sigma = noise_multiplier(epsilon, delta, rate, steps)
    except ValueError as exc:
        raise StageError(_too_small(job, epsilon, steps, exc)) from exc
    max_norm = job.dp.max_grad_norm or DEFAULT_MAX_GRAD_NORM
    return PrivacyPlan(epsilon, delta, max_norm, rows, expected, rate, steps, sigma)


@functools.lru_cache(maxsize=64)
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier (the least, to opacus' bisection tolerance) under which `steps`
    steps at `sample_rate` spend at most `epsilon` at `delta`; a ValueError when none does.
    A pure function, remembered: the bisection takes seconds."""
    from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]

    with warnings.catch_warnings():  # the search tries noise so large that the top order wins
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        sigma = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=ACCOUNTANT,
            epsilon_tolerance=EPSILON_TOLERANCE,
            alphas=list(ALPHAS),
        )
    return float(sigma)


def _too_small(job: TrainJob, epsilon: float, steps: int, exc: Exception) -> Diagnostic:
    return _budget(
        job,
        f"no noise lets `{job.model}` train {steps} steps within epsilon {epsilon:g}",
        "raise `epsilon`, or train fewer steps (`epochs`, `max_steps`) on larger batches",
        (f"opacus: {exc}",),
    )


class Ledger:
    """opacus' RDP accountant for one run: its history of (noise multiplier, sample rate,
    steps) survives checkpoints, so a resumed run counts what it already spent."""

    def __init__(self, plan: PrivacyPlan, history: list[tuple[float, float, int]] | None = None):
        from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]

        self.plan = plan
        self.accountant = RDPAccountant()
        self.accountant.history = [tuple(entry) for entry in history or []]

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [(float(s), float(q), int(n)) for s, q, n in self.accountant.history]

    def step(self) -> None:
        self.accountant.step(
            noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate
        )

    def spent(self, more_steps: int = 0) -> float:
        """Epsilon at the plan's delta after the steps taken (and `more_steps` more)."""
        from opacus.accountants import RDPAccountant

        accountant = self.accountant
        if more_steps > 0:
            accountant = RDPAccountant()
            step = (self.plan.noise_multiplier, self.plan.sample_rate, more_steps)
            accountant.history = [*self.history, step]
        if not accountant.history:
            return 0.0
        return float(accountant.get_epsilon(delta=self.plan.delta, alphas=list(ALPHAS)))

    def steps_within_budget(self, wanted: int) -> int:
        """The most steps, up to `wanted`, after which the spent epsilon is still at most the
        plan's (epsilon grows with every step, so a bisection finds it)."""
        if wanted <= 0 or self.spent(wanted) <= self.plan.epsilon:
            return max(wanted, 0)
        low, high = 0, wanted  # spent(low) fits (0 more steps: what is spent already)
        while high - low > 1:
            middle = (low + high) // 2
            if self.spent(middle) <= self.plan.epsilon:
                low = middle
            else:
                high = middle
        return low
