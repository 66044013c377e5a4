"""Hover: what the name, setting, function, quantity or constraint under the cursor means."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from fmlang.fmt import format_expr
from fmlang.lsp import describe
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.index import Mark, Target, at, marks_of
from fmlang.syntax import ast

DECLARATIONS = ("dataset", "labels", "model", "merge", "base_model", "hardware", "let")


def hover(snapshot: Snapshot, position: types.Position) -> types.Hover | None:
    line, column = snapshot.lines().line_column(position)
    mark = at(marks_of(snapshot), line, column)
    if mark is None:
        return None
    text = explain(snapshot, mark)
    if not text:
        return None
    content = types.MarkupContent(kind=types.MarkupKind.Markdown, value=text)
    return types.Hover(contents=content, range=snapshot.lines().range(mark.span))


def explain(snapshot: Snapshot, mark: Mark) -> str:
    word = _text_of(snapshot, mark)
    if mark.target is not None:
        return target_text(snapshot, mark.target)
    if mark.role == "key":
        return describe.setting(word, mark.setting)
    if mark.role == "function":
        return describe.function(word)
    if mark.role == "type":
        return describe.column_type(word)
    if mark.role == "tag":
        return describe.tag(word.lstrip("@"))
    if mark.role == "quantity" and isinstance(mark.node, ast.Quantity):
        return f"`{mark.node.text}` = {describe.quantity(mark.node)}"
    if mark.role == "constraint" and isinstance(mark.node, ast.Constraint):
        return constraint_text(snapshot, mark.node)
    return ""


def _text_of(snapshot: Snapshot, mark: Mark) -> str:
    span = mark.span
    return snapshot.lines().line_text(span.line)[span.column - 1 : span.end_column - 1]


def target_text(snapshot: Snapshot, target: Target) -> str:
    program = snapshot.result.program
    if target.kind == "module":
        names = sorted(
            s.name for s in program.scopes.get(target.span.file, {}).values()
            if s.file == target.span.file
        )  # fmt: skip
        listed = ", ".join(f"`{n}`" for n in names)
        return describe.fenced(f"import {target.name}") + (
            f"\n\nprovides {listed}" if listed else ""
        )
    if target.kind == "file":
        return describe.fenced(f'import "{target.name}"') + f"\n\n`{target.span.file}`"
    text = describe.declaration(program, target)
    if target.kind in ("model", "merge"):
        rows = _rows(snapshot, lambda row: row.get("target") == target.name)
        if rows:
            text += "\n\n**constraints**\n" + "\n".join(f"- {_row_text(r)}" for r in rows)
    return text


# ---- constraints ------------------------------------------------------------------------


def constraint_text(snapshot: Snapshot, node: ast.Constraint) -> str:
    written = format_expr(node.expr) + (f" on {format_expr(node.on)}" if node.on else "")
    clause = node.confidence
    if clause is not None:
        written += f" with {clause.word.name} {format_expr(clause.level)}"
    parts = [describe.fenced(written)]
    classified = _ir_constraint(snapshot, node)
    if classified is not None:
        parts.append(classified)
    line = node.span.line
    rows = _rows(snapshot, lambda r: r.get("line") == line and r.get("file") == snapshot.file)
    if rows:
        parts.append(_row_text(rows[0]))
    elif snapshot.result.ok and snapshot.verified is None:
        parts.append("*estimate: the verifier is still working*")
    return "\n\n".join(parts)


def _ir_constraint(snapshot: Snapshot, node: ast.Constraint) -> str | None:
    """The constraint as the IR classifies it: kind, metric, bound in base units."""
    if not snapshot.result.ok:
        return None
    from fmlang.api import compile_spec

    try:
        spec = compile_spec(snapshot.result)
    except Exception:  # the IR builder is not meant to fail on checked input; hover must not
        return None
    for c in spec.constraints:
        if c.span is not None and c.span.file == snapshot.file and c.span.line == node.span.line:
            bound = ""
            if c.bound is not None:
                unit = f" {c.bound.unit}" if c.bound.unit else ""
                value = describe.number(c.bound.value)
                bound = f" `{c.bound.text}` = {value}{unit} ({c.bound.dimension})"
            values = f" {', '.join(c.values)}" if c.values else ""
            text = f"**{c.kind}** constraint on `{c.target}`: {c.metric} {c.op}{bound}{values}"
            return text + _confidence_text(c.kind, c.confidence)
    return None


def _confidence_text(kind: str, level: float | None) -> str:
    """How a runtime gate decides: by its interval's far end, or by the point estimate."""
    if kind not in ("quality", "fairness"):
        return ""
    if level is None:
        return (
            "\n\nchecked after training on the point estimate; the run also reports its 95% "
            "interval (add `with confidence 95%` to require the whole interval to pass)"
        )
    return (
        f"\n\nchecked after training: passes only if the whole {describe.number(level * 100)}% "
        "confidence interval clears the bound (Wilson for accuracy, a seeded bootstrap "
        "for F1, gaps and perplexity)"
    )


def _rows(snapshot: Snapshot, keep: Any) -> list[dict[str, Any]]:
    verified = snapshot.verified
    return [row for row in (verified.constraints if verified else ()) if keep(row)]


def _row_text(row: dict[str, Any]) -> str:
    head = f"`{row.get('metric', '?')}` bound `{row.get('bound', '')}`"
    verdict = row.get("verdict", "?")
    if "estimate_text" in row:
        binding = ", binding" if row.get("binding") else ""
        return f"{head}: estimate **{row['estimate_text']}** ({verdict}{binding})"
    note = f": {row['note']}" if row.get("note") else ""
    return f"{head}: {verdict}{note}"
