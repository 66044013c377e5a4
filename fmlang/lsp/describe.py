"""Markdown descriptions of what the index found: declarations with their resolved facts,
settings from the schema table, functions, tags, quantities in base units."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fmlang.check import schema as s
from fmlang.check.expressions import FUNCTIONS
from fmlang.check.program import Program
from fmlang.check.units import DIMENSIONS, normalise
from fmlang.fmt import format_expr
from fmlang.lsp.index import Target, fields_of
from fmlang.syntax import ast

FACT_BLOCKS = ("base_model", "hardware")


def fenced(code: str) -> str:
    return f"```fm\n{code}\n```"


def declaration(program: Program, target: Target) -> str:
    """A declaration's header, its doc comment and its facts."""
    parts = [fenced(_header(target))]
    comment = doc_comment(program, target)
    if comment:
        parts.append(comment)
    facts = _facts(target)
    if facts:
        parts.append("\n".join(f"- **{key}**: {value}" for key, value in facts))
    where = target.span.file
    parts.append(f"*declared in `{where}` line {target.span.line}*")
    return "\n\n".join(parts)


def _header(target: Target) -> str:
    node = target.node
    if target.kind == "let" and isinstance(node, ast.Let):
        return f"let {target.name} = {format_expr(node.value)}"
    if target.kind == "labels" and isinstance(node, ast.Labels):
        return f"labels {target.name} on {'.'.join(p.name for p in node.source)}"
    if target.kind == "column" and isinstance(node, ast.Field):
        return f"{target.name}: {_type_text(node)}"
    if target.kind in ("split", "class", "lf"):
        return f"{target.kind} {target.name}"
    return f"{target.kind} {target.name}"


def _type_text(f: ast.Field) -> str:
    args = f"[{', '.join(a.name for a in f.type.args)}]" if f.type.args else ""
    tags = "".join(f" @{t.name}" for t in f.tags)
    default = f" = {format_expr(f.default)}" if f.default is not None else ""
    options = ", ".join(
        f"{o.key.name} = {format_expr(o.value)}" for o in f.options if isinstance(o, ast.Setting)
    )
    return f"{f.type.name.name}{args}{tags}{default}" + (f" {{ {options} }}" if options else "")


def doc_comment(program: Program, target: Target) -> str:
    """The `#` lines right above a declaration, as written."""
    source = program.files.get(target.span.file)
    if source is None or target.kind in ("column", "split", "class"):
        return ""
    lines = source.text.split("\n")
    found: list[str] = []
    row = target.span.line - 2
    while row >= 0 and lines[row].lstrip().startswith("#"):
        found.append(lines[row].lstrip()[1:].strip())
        row -= 1
    return "\n".join(reversed(found)).strip()


def _facts(target: Target) -> list[tuple[str, str]]:
    node = target.node
    if isinstance(node, ast.Block):
        return _block_facts(node)
    if isinstance(node, ast.Dataset):
        return _dataset_facts(node)
    if isinstance(node, ast.Labels):
        return _labels_facts(node)
    if isinstance(node, ast.SplitPart):
        kind = "files" if isinstance(node.share, ast.String) else "share"
        return [(kind, format_expr(node.share)), ("of dataset", f"`{target.owner}`")]
    if target.kind == "class":
        return [("class of labels", f"`{target.owner}`")]
    if target.kind == "column":
        return [("column of dataset", f"`{target.owner}`")]
    return []


def _block_facts(block: ast.Block) -> list[tuple[str, str]]:
    facts = []
    for stmt in block.body:
        if isinstance(stmt, ast.Setting) and stmt.by:  # `select by METRIC on SPLIT`
            on = f" on {format_expr(stmt.on)}" if stmt.on is not None else ""
            facts.append((stmt.key.name, f"`by {format_expr(stmt.value)}{on}`"))
        elif isinstance(stmt, ast.Setting):
            facts.append((stmt.key.name, _value_text(stmt.key.name, stmt.value)))
        elif isinstance(stmt, ast.BlockSetting):
            inner = ", ".join(c.key.name for c in stmt.body)
            facts.append((stmt.key.name, f"`{{ {inner} }}`"))
    return facts


def _value_text(key: str, value: ast.Expr) -> str:
    text = f"`{format_expr(value)}`"
    if key == "params" and isinstance(value, ast.Number) and value.is_integer:
        return f"{int(value.value):,} ({short_count(value.value)})"
    if isinstance(value, ast.Quantity):
        return f"{text} = {quantity(value)}"
    return text


def short_count(count: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:g}"


def _dataset_facts(dataset: ast.Dataset) -> list[tuple[str, str]]:
    facts = []
    source = next(
        (st for st in dataset.body if isinstance(st, ast.Setting) and st.key.name == "source"), None
    )
    if source is not None:
        facts.append(("source", f"`{format_expr(source.value)}`"))
    fields = fields_of(dataset)
    if fields:
        shown = ", ".join(f"`{name}: {_type_text(f)}`" for name, f in fields.items())
        facts.append(("columns", shown))
    parts = [p for st in dataset.body if isinstance(st, ast.Split) for p in st.parts]
    if parts:
        shares = ", ".join(f"`{p.name.name} {format_expr(p.share)}`" for p in parts)
        facts.append(("splits", shares))
    return facts


def _labels_facts(labels: ast.Labels) -> list[tuple[str, str]]:
    facts = []
    for stmt in labels.body:
        if isinstance(stmt, ast.Setting):
            facts.append((stmt.key.name, f"`{format_expr(stmt.value)}`"))
    functions = [st.name.name for st in labels.body if isinstance(st, ast.LabelingFunction)]
    if functions:
        facts.append(
            (f"{len(functions)} labeling functions", ", ".join(f"`{f}`" for f in functions))
        )
    return facts


def quantity(node: ast.Quantity) -> str:
    measured = normalise(node.value, node.unit)
    if measured is None:
        return f"unknown unit `{node.unit}`"
    if measured.dimension == "ratio":
        return f"{number(measured.value)} (a fraction)"
    return f"{number(measured.value)} {measured.base_unit} ({measured.dimension})"


def number(value: float) -> str:
    """`1,048,576`, `0.03`, `3.35e+12`: whole numbers grouped, others short."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.6g}"


# ---- settings, functions, tags ------------------------------------------------------------


def setting(name: str, kind: s.Kind | None) -> str:
    if kind is None:
        return f"`{name}`: not a setting here"
    lines = [f"**{name}**: {kind_text(kind)}"]
    if kind.doc:
        lines.append(kind.doc)
    return "\n\n".join(lines)


def kind_text(kind: s.Kind) -> str:
    describe = _KIND_TEXT.get(type(kind))
    text = describe(kind) if describe is not None else "a value"
    return text + (", or `auto` (the solver chooses)" if kind.auto else "")


def _bounds(kind: s.Int | s.Real) -> str:
    if kind.min is not None and kind.max is not None:
        return f" from {kind.min:g} to {kind.max:g}"
    if kind.min is not None:
        return f" ≥ {kind.min:g}"
    return f" ≤ {kind.max:g}" if kind.max is not None else ""


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _units(dimension: str) -> str:
    return ", ".join(f"`{u}`" for u in DIMENSIONS.get(dimension, {}))


_KIND_TEXT: dict[type, Callable[[Any], str]] = {
    s.Int: lambda k: "whole number" + _bounds(k),
    s.Real: lambda k: "number" + _bounds(k),
    s.Qty: lambda k: f"quantity ({k.dimension}: {_units(k.dimension)})",
    s.Text: lambda k: "string",
    s.Flag: lambda k: "`true` or `false`",
    s.OneOf: lambda k: f"one of {_choices(k.values)}",
    s.Names: lambda k: "names" + (f" from {_choices(k.values)}" if k.values else ""),
    s.Reals: lambda k: "list of numbers",
    s.Ref: lambda k: ("list of " if k.many else "") + f"`{'` or `'.join(k.target)}` name",
    s.DataRef: lambda k: "a dataset, `dataset.split`" + (" or labels" if k.labels_ok else ""),
    s.Column: lambda k: "column" + ("s" if k.many else "") + " of the dataset in scope",
    s.Between: lambda k: f"count ≥ {k.min} or a range `lo..hi`",
    s.Call: lambda k: (
        f"one of {_choices(tuple(f'{h}(…)' if a else h for h, a in k.heads.items()))}"
    ),
    s.Block: lambda k: f"block `{{ … }}` with {_choices(tuple(k.settings))}",
}


def function(name: str) -> str:
    params, result, what = FUNCTIONS[name]
    signature = f"{name}({', '.join(params)}) -> {result}"
    return f"{fenced(signature)}\n\n{what}"


def column_type(name: str) -> str:
    return f"column type `{name}` (types: {_choices(s.COLUMN_TYPES)})"


def tag(name: str) -> str:
    doc = s.COLUMN_TAGS.get(name)
    return (
        f"`@{name}`: {doc}"
        if doc
        else f"unknown tag `@{name}` (tags: {_choices(tuple(s.COLUMN_TAGS))})"
    )
