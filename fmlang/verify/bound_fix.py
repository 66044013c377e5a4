"""The verifier's smallest feasible bound change as an edit: the bound's literal rewritten
in the unit the user wrote it in (`2500ms` → `2850ms`), rounded so that it still holds."""

from __future__ import annotations

import math
import re

from fmlang.diagnostics import Fix, Span

_LITERAL = re.compile(r"^(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(\S*)$")
SIGNIFICANT = 3


def bound_fix(span: Span, written: str, value: float, needed: float, upper: bool) -> Fix | None:
    """An edit of the literal `written` (worth `value` in base units) to `needed`, rounded
    up for an upper bound (`<=`: raising it) and down for a lower one. None when the literal
    has no number to rewrite or the new bound would not be a plain positive number."""
    found = _LITERAL.match(written.replace("_", ""))
    if found is None or not math.isfinite(needed) or needed <= 0:
        return None
    number = float(found.group(1))
    if number == 0 or value == 0:
        return None
    scale = value / number  # base units per written unit
    text = _rounded(needed / scale, upper) + found.group(2)
    verb = "raise" if upper else "lower"
    return Fix(f"{verb} the bound to {text}", span, text)


def _rounded(x: float, up: bool) -> str:
    """`x` to SIGNIFICANT digits, rounded up or down (never across the bound it must meet)."""
    exponent = math.floor(math.log10(abs(x))) - (SIGNIFICANT - 1)
    step = 10.0**exponent
    steps = math.ceil(x / step - 1e-9) if up else math.floor(x / step + 1e-9)
    if exponent >= 0:
        return str(int(steps) * int(step))
    return f"{steps * step:.{-exponent}f}".rstrip("0").rstrip(".")
