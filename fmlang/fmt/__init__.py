"""`fmc fmt`: the one canonical layout of a `.fm` spec, comments kept.

    >>> format_text("model m { base   minilm }").text
    'model m {\\n  base minilm\\n}\\n'

Formatting never changes meaning: the formatted text parses back to an equal AST, and
formatting it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.diagnostics import Diagnostic
from fmlang.fmt.expr import format_expr
from fmlang.fmt.printer import format_module
from fmlang.syntax.parser import parse, too_deep

__all__ = ["FormatResult", "format_expr", "format_module", "format_text"]


@dataclass(frozen=True, slots=True)
class FormatResult:
    """The formatted text, or the diagnostics that explain why the input does not parse."""

    text: str | None
    diagnostics: tuple[Diagnostic, ...] = ()
    changed: bool = False

    @property
    def ok(self) -> bool:
        return self.text is not None


def format_text(text: str, file: str = "<input>") -> FormatResult:
    parsed = parse(text, file)
    if parsed.module is None:
        return FormatResult(None, parsed.diagnostics)
    try:
        formatted = format_module(parsed.module)
    except RecursionError:
        return FormatResult(None, (too_deep(file),))
    return FormatResult(formatted, parsed.diagnostics, changed=formatted != text)
