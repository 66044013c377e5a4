"""The IR's foundations: spans, the `Node` base class, quantities and knobs.

Every IR node is a frozen pydantic model. Its `span` says where it was written; the span is
excluded from serialization and from identity, so a spec parsed from differently formatted
text builds an equal IR, and a JSON round-trip (which drops spans) gives back an equal IR.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, Field

from fmlang.diagnostics import Span

SCHEMA_VERSION: Literal["1"] = "1"

# A value as written in a spec: names and strings become `str`, numbers `int` or `float`.
Scalar = bool | int | float | str


class SourceSpan(_PydanticModel):
    """Where a node was written. Lines and columns are 1-based; offsets 0-based."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    @classmethod
    def of(cls, span: Span | None) -> SourceSpan | None:
        """The span of an AST node; None for a synthetic node (`<none>` file, line 0)."""
        if span is None or span.line == 0:
            return None
        return cls(
            file=span.file,
            line=span.line,
            column=span.column,
            end_line=span.end_line,
            end_column=span.end_column,
            start=span.start,
            end=span.end,
        )

    def to_span(self) -> Span:
        """The diagnostics `Span`, to label a verifier or lowering diagnostic."""
        return Span(
            self.file, self.line, self.column, self.end_line, self.end_column, self.start, self.end
        )


class Node(_PydanticModel):
    """Base of every IR node: frozen, no extra fields, identity without `span`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    span: SourceSpan | None = Field(default=None, exclude=True, repr=False)

    def _identity(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in type(self).model_fields if name != "span")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return type(self) is type(other) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self._identity()))


class Quantity(Node):
    """A measured value in its dimension's base unit.

    `512MiB` → value 536870912.0, unit `B`, dimension `bytes`, text `512MiB`.
    Percentages and bare fractions are dimension `ratio` with unit `""`: `5%` → 0.05.
    Plain numbers where no unit applies (perplexity, epsilon) are dimension `number`.
    """

    value: float
    unit: str
    dimension: str
    text: str


class Knob(Node):
    """A setting the solver may choose.

    - `8`                → fixed=8
    - `auto`             → auto, with the schema's bounds (`low`/`high`) or its choices
    - `auto in [4, 8]`   → auto, choices=(4, 8)
    - `auto in 1..4`     → auto, low=1, high=4
    - `1..4` (replicas)  → not auto: an autoscaling range, low=1, high=4
    """

    fixed: Scalar | None = None
    auto: bool = False
    choices: tuple[Scalar, ...] | None = None
    low: int | float | None = None
    high: int | float | None = None

    @property
    def is_fixed(self) -> bool:
        return self.fixed is not None


class Option(Node):
    """One `name = value` argument: a source option, a merge method's density, ..."""

    name: str
    value: Scalar | Quantity | tuple[Scalar, ...]


class DataRef(Node):
    """Data a model reads: `dataset`, `dataset.split`, or a `labels` block's output.

    A `labels` reference is resolved: `dataset` and `split` say what the labels are on.
    """

    dataset: str
    split: str | None = None
    labels: str | None = None


class Grant(Node):
    """`grant read, train to analysts` becomes one `Grant` per permission."""

    permission: str
    principals: tuple[str, ...]
