"""Which statement each `#` comment belongs to, so that `fmt` can put it back.

A comment is placed by where it sits among the statements of the innermost block around it:

- after a statement, on the line where that statement ends → *trailing* that statement;
- on the line of a block's opening, before its first statement → *header* of that block
  (printed after the `{`);
- on its own line → *leading* the next statement of the block, or *dangling* before the
  block's `}` when no statement follows (for the module: at the end of the file);
- inside a statement that is printed on one line (an expression broken over several lines)
  → *leading* that statement, since one line holds at most one trailing comment.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from fmlang.diagnostics import Span
from fmlang.syntax import ast


class Spanned(Protocol):
    @property
    def span(self) -> Span: ...


@dataclass
class Attached:
    """Comments keyed by the `id()` of the statement they belong to."""

    leading: defaultdict[int, list[ast.Comment]] = field(default_factory=lambda: defaultdict(list))
    trailing: dict[int, ast.Comment] = field(default_factory=dict)
    header: dict[int, ast.Comment] = field(default_factory=dict)
    dangling: defaultdict[int, list[ast.Comment]] = field(default_factory=lambda: defaultdict(list))


def statements_of(node: object) -> tuple[Spanned, ...] | None:
    """The statements inside a block, in order; None for a statement that holds none."""
    if isinstance(node, ast.Module):
        return node.items
    if isinstance(node, ast.Dataset | ast.Labels | ast.Block | ast.BlockSetting):
        return node.body
    if isinstance(node, ast.Constraints):
        return node.items
    if isinstance(node, ast.Schema):
        return node.fields
    if isinstance(node, ast.Clean):
        return node.rules
    if isinstance(node, ast.Split):
        return node.parts if node.by is None else (*node.parts, node.by)
    return None


def attach(module: ast.Module) -> Attached:
    attached = Attached()
    for comment in module.comments:
        _place(module, comment, attached)
    return attached


def _place(container: Spanned, comment: ast.Comment, attached: Attached) -> None:
    position = comment.span.start
    previous: Spanned | None = None
    following: Spanned | None = None
    for statement in statements_of(container) or ():
        span = statement.span
        if span.end <= position:
            previous = statement
            continue
        if span.start <= position:
            if statements_of(statement) is None:
                attached.leading[id(statement)].append(comment)
            else:
                _place(statement, comment, attached)
            return
        following = statement
        break
    _place_between(container, previous, following, comment, attached)


def _place_between(
    container: Spanned,
    previous: Spanned | None,
    following: Spanned | None,
    comment: ast.Comment,
    attached: Attached,
) -> None:
    line = comment.span.line
    if (
        previous is not None
        and previous.span.end_line == line
        and id(previous) not in (attached.trailing)
    ):
        attached.trailing[id(previous)] = comment
    elif (
        previous is None
        and not isinstance(container, ast.Module)
        and container.span.line == line
        and id(container) not in attached.header
    ):
        attached.header[id(container)] = comment
    elif following is not None:
        attached.leading[id(following)].append(comment)
    else:
        attached.dangling[id(container)].append(comment)


def has_comments_inside(span: Span, comments: tuple[ast.Comment, ...]) -> bool:
    return any(span.start < c.span.start < span.end for c in comments)
