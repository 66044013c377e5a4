"""The abstract syntax tree. It mirrors the grammar and may still be invalid.

Every node carries a `span` that is excluded from equality, so two parses of
differently formatted but equivalent text compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fmlang.diagnostics import Span

NO_SPAN = Span("<none>", 0, 0, 0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ident:
    name: str
    span: Span = _span()


# ---- expressions ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Attribute:
    value: Expr
    attr: Ident
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Argument:
    name: Ident | None
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    func: Expr
    args: tuple[Argument, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Number:
    text: str
    span: Span = _span()

    @property
    def value(self) -> float:
        return float(self.text.replace("_", ""))

    @property
    def is_integer(self) -> bool:
        return not any(c in self.text for c in ".eE")


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit: `30ms`, `2GiB`, `5%`, `3.35TB/s`."""

    text: str
    magnitude: str
    unit: str
    span: Span = _span()

    @property
    def value(self) -> float:
        return float(self.magnitude.replace("_", ""))


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Regex:
    pattern: str
    flags: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Auto:
    """A knob left to the solver, optionally with the domain it may choose from."""

    domain: Expr | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Range:
    low: Expr
    high: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Expr
    span: Span = _span()


Expr = (
    Name
    | Attribute
    | Call
    | Number
    | Quantity
    | String
    | Regex
    | Bool
    | Auto
    | ListExpr
    | Range
    | Binary
    | Unary
)


# ---- statements -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """`key value` or `key = value`; `select by value on split` sets `by` and `on`."""

    key: Ident
    value: Expr
    span: Span = _span()
    by: bool = False
    on: Expr | None = None


@dataclass(frozen=True, slots=True)
class BlockSetting:
    """`key { settings }`."""

    key: Ident
    body: tuple[Setting | BlockSetting, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    quoted: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Grant:
    permissions: tuple[Ident, ...]
    principals: tuple[Principal, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class TypeRef:
    name: Ident
    args: tuple[Ident, ...] = ()
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Field:
    name: Ident
    type: TypeRef
    tags: tuple[Ident, ...]
    default: Expr | None
    span: Span = _span()
    options: tuple[Setting | BlockSetting, ...] = ()  # `{ on_cast_error = null }`


@dataclass(frozen=True, slots=True)
class Schema:
    fields: tuple[Field, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Dedupe:
    columns: tuple[Ident, ...]
    near: Number | Quantity | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class FilterRows:
    """`drop where cond` (keep=False) or `keep where cond` (keep=True)."""

    keep: bool
    condition: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DropColumns:
    columns: tuple[Ident, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Normalize:
    columns: tuple[Ident, ...]
    operations: tuple[Ident, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Redact:
    kinds: tuple[Ident, ...]
    columns: tuple[Ident, ...]
    span: Span = _span()


CleanRule = Dedupe | FilterRows | DropColumns | Normalize | Redact


@dataclass(frozen=True, slots=True)
class Clean:
    rules: tuple[CleanRule, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class SplitPart:
    """`train 80%`, or `train "train.json"`: the rows of the source files the name matches."""

    name: Ident
    share: Number | Quantity | String
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Split:
    parts: tuple[SplitPart, ...]
    by: Expr | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LabelingFunction:
    name: Ident
    expr: Expr
    target: Ident | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Confidence:
    """`with confidence 95%`: `word` is the name after `with` (checked to be `confidence`)."""

    word: Ident
    level: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Constraint:
    expr: Expr
    on: Expr | None
    span: Span = _span()
    confidence: Confidence | None = None


BodyStmt = Setting | BlockSetting | Grant
DatasetStmt = Setting | BlockSetting | Grant | Schema | Clean | Split
LabelsStmt = Setting | BlockSetting | Grant | LabelingFunction


# ---- top-level items --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportModule:
    """`import std.models.minilm_l6` or `import std.hardware.{cpu_2core, h100}`."""

    path: tuple[Ident, ...]
    names: tuple[Ident, ...] | None
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(part.name for part in self.path)


@dataclass(frozen=True, slots=True)
class ImportFile:
    path: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Let:
    name: Ident
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Dataset:
    name: Ident
    body: tuple[DatasetStmt, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Labels:
    name: Ident
    source: tuple[Ident, ...]
    body: tuple[LabelsStmt, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Block:
    """`model`, `merge`, `deploy`, `base_model` and `hardware` share one shape."""

    kind: str
    name: Ident
    body: tuple[BodyStmt, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Constraints:
    target: Ident
    items: tuple[Constraint, ...]
    span: Span = _span()


Item = ImportModule | ImportFile | Let | Dataset | Labels | Block | Constraints


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Module:
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
    span: Span = _span()
