"""The kinds of value a setting takes; `schema.py` gives every setting one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kind:
    """A value kind. `auto` says whether the solver may choose it."""

    doc: str = ""
    auto: bool = False


@dataclass(frozen=True)
class Int(Kind):
    """A whole number from `min` to `max` (inclusive); `why` says where the bounds come from
    (the help line when a value falls outside them).

    A bare `auto` offers the solver `min` to `max` (the verifier's own default range when
    `max` is None). A knob that accepts values far above what the solver should search
    writes that bound as `limit` instead: the checker accepts up to `limit`, and the
    solver's default stays its own."""

    min: int | None = None
    max: int | None = None
    limit: int | None = None
    why: str = ""

    @property
    def highest(self) -> int | None:
        """The largest value the checker accepts."""
        return self.limit if self.limit is not None else self.max


@dataclass(frozen=True)
class Real(Kind):
    """A finite number from `min` to `max`; an `open_` bound excludes the value itself."""

    min: float | None = None
    max: float | None = None
    open_min: bool = False
    open_max: bool = False
    limit: float | None = None  # as for `Int`: accepted, but not offered to a bare `auto`
    why: str = ""

    @property
    def highest(self) -> float | None:
        return self.limit if self.limit is not None else self.max


@dataclass(frozen=True)
class Qty(Kind):
    """A finite quantity with a unit of `dimension`; `positive`: above zero."""

    dimension: str = "bytes"
    positive: bool = False


@dataclass(frozen=True)
class Text(Kind):
    pass


@dataclass(frozen=True)
class Flag(Kind):
    pass


@dataclass(frozen=True)
class OneOf(Kind):
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Names(Kind):
    """A list of bare names: module names, metric names, column names."""

    values: tuple[str, ...] = ()  # empty: any name


@dataclass(frozen=True)
class Reals(Kind):
    """A list of finite numbers, each from `min` to `max`."""

    min: float | None = None
    max: float | None = None
    why: str = ""

    @property
    def highest(self) -> float | None:
        return self.max


@dataclass(frozen=True)
class Ref(Kind):
    """A reference to a declaration: `base_model`, `hardware`, `labels`, `model`, ..."""

    target: tuple[str, ...] = ()
    many: bool = False


@dataclass(frozen=True)
class DataRef(Kind):
    """`dataset` or `dataset.split` (or `labels`, whose output is a labelled dataset)."""

    many: bool = False
    labels_ok: bool = True


@dataclass(frozen=True)
class Column(Kind):
    """A column of the dataset in scope."""

    many: bool = False


@dataclass(frozen=True)
class Between(Kind):
    """An integer or an inclusive range `1..4` (or auto), each end from `min` to `max`."""

    min: int = 0
    limit: int | None = None  # as for `Int`: the largest count accepted
    why: str = ""

    @property
    def highest(self) -> int | None:
        return self.limit


@dataclass(frozen=True)
class Call(Kind):
    """`head(args)` or a bare `head`; each head names its keyword arguments."""

    heads: dict[str, dict[str, Kind]] = field(default_factory=dict)
    positional: dict[str, tuple[Kind, ...]] = field(default_factory=dict)
    # `auto in [a(...), b(...)]` lists candidates `fmc run` trains and selects among (model
    # selection, `fmlang.ir.selection`), not a knob the solver chooses.
    candidates: bool = False


@dataclass(frozen=True)
class Block(Kind):
    settings: dict[str, Kind] = field(default_factory=dict)
