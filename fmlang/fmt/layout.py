"""Column alignment: labeling functions, runs of settings, and trailing comments.

Alignment depends only on the text being printed and on where blank lines are kept, never on
the columns of the input, so formatting stays a fixed point.
"""

from __future__ import annotations

from fmlang.fmt.expr import format_expr
from fmlang.syntax import ast

WIDTH = 100
# Lines longer than this take no part in aligning `->` or comments, so that one long line
# does not push every other line's `->` or comment to the far right.
ALIGN_LIMIT = 80


class CommentedLine(str):
    """A printed line that ends in a trailing comment, which `align_comments` may move."""

    code: str
    comment: str

    @classmethod
    def of(cls, code: str, comment: str) -> CommentedLine:
        line = cls(f"{code}  {comment}")
        line.code, line.comment = code, comment
        return line


def align_comments(lines: list[str]) -> list[str]:
    """Trailing comments of consecutive lines at one indentation start in one column."""
    out: list[str] = []
    run: list[str] = []
    for line in lines:
        if run and not _continues_run(run[0], line):
            out += _aligned_run(run)
            run = []
        if _may_align(line):
            run.append(line)
        else:
            out.append(line)
    return out + _aligned_run(run)


def _may_align(line: str) -> bool:
    code = line.code if isinstance(line, CommentedLine) else line
    stripped = code.strip()
    return bool(stripped) and not stripped.startswith(("#", "}")) and not code.endswith("{")


def _continues_run(first: str, line: str) -> bool:
    return _may_align(line) and _indent(line) == _indent(first)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _aligned_run(run: list[str]) -> list[str]:
    widths = [
        len(x.code) for x in run if isinstance(x, CommentedLine) and len(x.code) <= ALIGN_LIMIT
    ]
    if not widths:
        return run
    column = max(widths)
    return [
        CommentedLine.of(x.code.ljust(column), x.comment)
        if isinstance(x, CommentedLine) and len(x.code) <= column
        else x
        for x in run
    ]


class LabelingLayout:
    """Labeling functions of one block: names aligned, and `->` aligned where lines fit."""

    def __init__(self, lfs: list[ast.LabelingFunction], indent: str) -> None:
        self.indent = indent
        self.name_width = max((len(lf.name.name) + 1 for lf in lfs), default=0)
        self.exprs = {id(lf): format_expr(lf.expr) for lf in lfs}
        self.arrow_column = max(
            (len(self._head(lf)) for lf in lfs if self._aligns(lf)),
            default=0,
        )

    def _head(self, lf: ast.LabelingFunction) -> str:
        return f"{self.indent}lf {(lf.name.name + ':').ljust(self.name_width)} {self.exprs[id(lf)]}"

    def _aligns(self, lf: ast.LabelingFunction) -> bool:
        return lf.target is not None and len(self.line(lf, aligned=False)) <= ALIGN_LIMIT

    def line(self, lf: ast.LabelingFunction, aligned: bool = True) -> str:
        head = self._head(lf)
        if lf.target is None:
            return head
        if aligned and self._aligns(lf):
            head = head.ljust(self.arrow_column)
        return f"{head} -> {lf.target.name}"
