"""Knobs: settings left `auto` become solver variables over finite domains.

A fixed knob has a one-value domain. `auto in [a, b]` offers exactly those values;
`auto in lo..hi` and a bare `auto` offer the powers of two between the bounds plus the
bounds themselves, which keeps every estimate tabulable (see `encode.tabulate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from fmlang.diagnostics import Span
from fmlang.ir.base import Knob

# Preference order: less lossy first; gptq/awq need a pre-quantized checkpoint, so last.
QUANT_ORDER = ("none", "int8", "nf4", "fp4", "gptq", "awq")
PREQUANTIZED = ("gptq", "awq")  # only when written: they need a pre-quantized checkpoint


@dataclass(frozen=True)
class Choice:
    """A solver variable (index into `values`) and what it means."""

    name: str  # e.g. `spam_filter.rank`
    values: tuple[int | str, ...]
    var: z3.ArithRef
    span: Span | None  # the setting that declared it, for unsat-core labels
    auto: bool

    def value_in(self, model: z3.ModelRef) -> int | str:
        index = model.eval(self.var, model_completion=True).as_long()
        return self.values[int(index)]


def powers_between(low: int, high: int) -> tuple[int, ...]:
    values = {low, high}
    power = 1
    while power <= high:
        if power >= low:
            values.add(power)
        power *= 2
    return tuple(sorted(values))


def domain(
    knob: Knob | None, default: int | str, low: int = 1, high: int = 256, every: bool = False
) -> tuple[tuple[int | str, ...], bool]:
    """The values a knob may take and whether the solver chooses among them. `every` offers
    each integer of a range (replica counts) rather than its powers of two."""
    if knob is None:
        return (default,), False
    if knob.fixed is not None and not knob.auto:
        value = knob.fixed if isinstance(knob.fixed, str) else int(knob.fixed)
        return (value,), False
    if knob.choices:
        return tuple(c if isinstance(c, str) else int(c) for c in knob.choices), True
    if not knob.auto and knob.low is not None and knob.high is not None:
        return (int(knob.high),), False  # an autoscaling range: budget for its top
    lo = int(knob.low) if knob.low is not None else low
    hi = int(knob.high) if knob.high is not None else high
    if every:
        return tuple(range(lo, max(lo, hi) + 1)), True
    return powers_between(lo, max(lo, hi)), True


def make_choice(
    name: str, values: tuple[int | str, ...], span: Span | None, auto: bool
) -> tuple[Choice, z3.BoolRef]:
    """The variable and its domain constraint (0 <= index < len(values))."""
    var = z3.Int(name)
    return Choice(name, values, var, span, auto), z3.And(var >= 0, var < len(values))
