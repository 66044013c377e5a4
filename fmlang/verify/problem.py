"""The verification problem: tracked assertions, knob choices and named estimates."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import z3

from fmlang.diagnostics import Diagnostic, Span
from fmlang.verify.knobs import Choice, make_choice


@dataclass(frozen=True)
class Tracked:
    """One assertion the unsat core can name: a constraint line, a knob domain, a fact."""

    key: str
    expr: z3.BoolRef
    span: Span | None
    text: str
    constraint: bool = False  # a user constraint (relaxable), not a fact of the spec


@dataclass
class Estimate:
    """A figure the plan reports: a solver term and how to print it."""

    key: str
    term: z3.ArithRef
    unit: str  # `bytes`, `s`, `req/s`, `tok/s`, `USD/h`


@dataclass
class Problem:
    tracked: list[Tracked] = field(default_factory=list)
    plain: list[z3.BoolRef] = field(default_factory=list)  # domains and definitions
    choices: dict[str, Choice] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    objectives: list[tuple[str, z3.ArithRef]] = field(default_factory=list)
    bounds: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # key→(est, op, b)
    bound_literals: dict[str, tuple[Span, str]] = field(default_factory=dict)  # key→(span, text)
    # Per-model training memory (`train_fit.TrainingMemory`), for the report and advice.
    training: dict[str, Any] = field(default_factory=dict)
    # Notes a conflict on a tracked key adds (what would make it hold), computed on demand.
    advice: dict[str, Callable[[], tuple[str, ...]]] = field(default_factory=dict)
    refusals: list[Diagnostic] = field(default_factory=list)  # the encoder would not encode

    def track(
        self, key: str, expr: z3.BoolRef, span: Span | None, text: str, constraint: bool = False
    ) -> None:
        self.tracked.append(Tracked(key, expr, span, text, constraint))

    def choice(
        self, name: str, values: tuple[int | str, ...], span: Span | None, auto: bool
    ) -> Choice:
        if name in self.choices:
            return self.choices[name]
        made, in_domain = make_choice(name, values, span, auto)
        self.choices[name] = made
        if span is not None:
            shown = ", ".join(str(v) for v in values)
            text = f"`{name}` may be {shown}" if auto else f"`{name}` is {values[0]}"
            self.track(f"domain:{name}", in_domain, span, text)
        else:
            self.plain.append(in_domain)
        return made

    def combine(self, key: str, parts: Sequence[z3.ArithRef], unit: str) -> Estimate:
        """An estimate that is the sum of others (memory = weights + adapters + runtime)."""
        if key not in self.estimates:
            self.estimates[key] = Estimate(key, sum(parts[1:], parts[0]), unit)
        return self.estimates[key]

    def estimate(
        self, key: str, choices: Sequence[Choice], formula: Callable[..., float], unit: str
    ) -> Estimate:
        if key not in self.estimates:
            self.estimates[key] = Estimate(key, tabulate(choices, formula), unit)
        return self.estimates[key]


def tabulate(choices: Sequence[Choice], formula: Callable[..., float]) -> z3.ArithRef:
    """`formula` over every combination of the choices' values, as nested `If`s: exact
    arithmetic on finite domains, so the solver and plain Python agree by construction.
    Outside the domains the term is unconstrained, so a conflict that depends on a knob's
    allowed values (even a fixed one) keeps that knob's line in the unsat core."""
    term: z3.ArithRef = z3.FreshReal("outside")
    for combo in reversed(list(itertools.product(*(range(len(c.values)) for c in choices)))):
        value = real(formula(*(c.values[i] for c, i in zip(choices, combo, strict=True))))
        if not choices:
            return value
        condition = z3.And(*[c.var == i for c, i in zip(choices, combo, strict=True)])
        term = z3.If(condition, value, term)
    return term


def real(value: float) -> z3.ArithRef:
    """A float as an exact z3 rational to 12 significant digits: relative precision, so a
    nanosecond latency and a petabyte keep their digits alike (a fixed denominator of 10^9
    made 1e-9 s and 5e-10 s compare equal)."""
    if value != value or value in (float("inf"), float("-inf")):
        return z3.RealVal(0)
    fraction = Fraction(Decimal(f"{value:.12g}"))
    return z3.RealVal(f"{fraction.numerator}/{fraction.denominator}")
