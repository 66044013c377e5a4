"""The numeric limits of the settings table, as kind constructors `schema.py` calls.

Every number a setting takes is bounded by what reads it (numpy, torch, transformers,
peft, opacus, vLLM, Kubernetes) and, where that would take anything, by a limit no real
spec reaches: a typo (`3e4` for `3e-4`), an overflow (`1e999`) or an absurd count is refused
at its line by `fmc check`, instead of crashing or running forever later. Each `why` is the
help line of FM0304; docs/reference.md ("Numeric limits") lists them all.

A knob's `limit` is what the checker accepts; its `max`, when set, is also the range a bare
`auto` offers the solver (see `kinds.Int`), so a knob whose solver range is the verifier's
own gets a `limit` and no `max`.
"""

from __future__ import annotations

from fmlang.check.kinds import Int, Qty, Real

SEED_MAX = 2**32 - 1  # numpy's seeds
STEPS_MAX = 1_000_000_000
EPOCHS_MAX = 100_000
ROWS_MAX = 65_536
TOKENS_MAX = 2**24
RANK_MAX = 1024
ARCH_MAX = 2**24
EPSILON_MAX = 1000.0


def seed(doc: str = "") -> Int:
    why = "numpy (which transformers' `set_seed` seeds too) takes seeds below 2^32"
    return Int(doc, min=0, max=SEED_MAX, why=why)


def learning_rate(doc: str = "") -> Real:
    why = "learning rates are positive and finite, and none above 10 converges (typical ones "
    why += "lie between 1e-5 and 1e-2: `3e-4`, not `3e4`)"
    return Real(doc, min=0, open_min=True, max=10.0, why=why)


def steps(doc: str = "") -> Int:
    """A count of optimizer steps."""
    why = "a billion steps is years of training: give a count the run can finish"
    return Int(doc, min=1, max=STEPS_MAX, why=why)


def epochs(doc: str = "", whole: bool = False) -> Int | Real:
    why = f"0 passes train nothing, and {EPOCHS_MAX:,} passes is far past any useful training"
    if whole:
        return Int(doc, min=1, max=EPOCHS_MAX, why=why)
    return Real(doc, min=0, open_min=True, max=EPOCHS_MAX, why=why)


def batch(doc: str = "", auto: bool = False) -> Int:
    why = f"no device holds a batch of more than {ROWS_MAX:,} rows"
    why += "; leave it `auto` and the solver sizes it" if auto else ""
    return Int(doc, auto=auto, min=1, limit=ROWS_MAX, why=why)


def accumulation(doc: str = "") -> Int:
    why = f"{ROWS_MAX:,} micro-batches per optimizer step is far past any useful batch"
    return Int(doc, min=1, max=ROWS_MAX, why=why)


def tokens(doc: str = "", auto: bool = False) -> Int:
    why = "2^24 (16,777,216) tokens is beyond every published context window"
    return Int(doc, auto=auto, min=1, limit=TOKENS_MAX, why=why)


def rank(doc: str = "", auto: bool = False) -> Int:
    why = f"a rank above {RANK_MAX:,} adapts no better than `adapter full`, and serving "
    why += "runtimes take far less"
    return Int(doc, auto=auto, min=1, max=RANK_MAX, why=why)


def size(doc: str = "", most: int = ARCH_MAX) -> Int:
    """An architecture fact of a base model."""
    why = "that is beyond every published model: copy the value from its config.json"
    return Int(doc, min=1, max=most, why=why)


def devices(doc: str, most: int, why: str) -> Int:
    return Int(doc, min=1, max=most, why=why)


def port(doc: str = "") -> Int:
    return Int(doc, min=1, max=65_535, why="TCP ports are 1 to 65,535")


def positive(doc: str, dimension: str) -> Qty:
    """A capacity or a rate the cost model divides by: above zero."""
    return Qty(doc, dimension=dimension, positive=True)


def epsilon(doc: str = "", open_min: bool = True) -> Real:
    """A model's DP budget (above 0: epsilon 0 needs infinite noise) or a dataset's total."""
    why = f"above {EPSILON_MAX:,g} the noise protects nothing"
    if open_min:
        why = f"epsilon 0 needs infinite noise, and {why}"
    return Real(doc, min=0, open_min=open_min, max=EPSILON_MAX, why=why)


def fraction(doc: str = "", open_min: bool = False, open_max: bool = False, why: str = "") -> Real:
    return Real(doc, min=0, max=1, open_min=open_min, open_max=open_max, why=why)


def range_text(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    """`it must be above 0 and at most 10`, `it must be from 1 to 65,536`, ..."""
    if lo is not None and hi is not None and not open_lo and not open_hi:
        return f"it must be from {_number(lo)} to {_number(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'above' if open_lo else 'at least'} {_number(lo)}")
    if hi is not None:
        parts.append(f"{'below' if open_hi else 'at most'} {_number(hi)}")
    return "it must be " + " and ".join(parts)


def _number(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"
