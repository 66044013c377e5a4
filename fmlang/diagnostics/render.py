"""Render diagnostics: rich caret excerpts, `file:line:col:` short lines, JSON.

Source lines are quoted only from `sources`: a file the loader did not accept as a spec (not
text, or not a spec at all) is not in it, and its diagnostics name the file and position but
show none of its text. Bidirectional controls (U+202A-U+202E, U+2066-U+2069) are written out as
`<U+202E>`, so a quoted line cannot reorder the terminal it is printed on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fmlang.diagnostics.model import Diagnostic, Label, Severity

if TYPE_CHECKING:
    from rich.console import Console

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.NOTE: "bold cyan"}
MAX_SHOWN = 160  # longer source lines and messages are cut around what they point at
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BIDI_PATTERN = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


def visible(text: str) -> str:
    """`text` with every bidirectional control written out as `<U+202E>`."""
    if not any(c in text for c in BIDI_CONTROLS):
        return text
    return BIDI_PATTERN.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def clip(text: str, limit: int = 2 * MAX_SHOWN) -> str:
    """A message that quotes a huge token stays readable: its middle is left out."""
    text = visible(text)
    if len(text) <= limit:
        return text
    return text[: limit // 2] + " … " + text[-limit // 4 :]


def short(diagnostic: Diagnostic) -> str:
    """`file:line:col: error[FM0301]: message` — one line, for CI logs and editors."""
    span = diagnostic.primary_span
    where = f"{span.file}:{span.line}:{span.column}: " if span else ""
    return f"{where}{diagnostic.severity.value}[{diagnostic.code}]: {clip(diagnostic.message)}"


def to_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=2)


def excerpt_lines(diagnostic: Diagnostic, sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """The rustc-style excerpt as (text, style) lines, without colour decisions."""
    out: list[tuple[str, str]] = []
    head = f"{diagnostic.severity.value}[{diagnostic.code}]"
    out.append((f"{head}: {clip(diagnostic.message)}", _STYLE[diagnostic.severity]))
    by_file: dict[str, list[Label]] = {}
    for label in diagnostic.labels:
        by_file.setdefault(label.span.file, []).append(label)
    gutter = max((len(str(lb.span.line)) for lb in diagnostic.labels), default=1)
    for file, labels in by_file.items():
        first = min(labels, key=lambda lb: (not lb.primary, lb.span.line))
        out.append((f"{' ' * gutter}--> {file}:{first.span.line}:{first.span.column}", "blue"))
        if file not in sources:
            continue  # not a spec fmc accepted: its text is never quoted
        lines = sources[file].splitlines()
        out.append((f"{' ' * gutter} |", "blue"))
        for line_no in sorted({lb.span.line for lb in labels}):
            on_line = sorted(
                (lb for lb in labels if lb.span.line == line_no), key=lambda lb: lb.span.column
            )
            full = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
            text, shift = _window(full, on_line[0].span.column)
            out.append((f"{line_no:>{gutter}} | {visible(text).expandtabs(4)}", ""))
            for label in on_line:
                out.append(_caret_line(label, text, gutter, shift))
        out.append((f"{' ' * gutter} |", "blue"))
    for note in diagnostic.notes:
        out.append((f"{' ' * gutter} = note: {visible(note)}", ""))
    if diagnostic.help:
        out.append((f"{' ' * gutter} = help: {visible(diagnostic.help)}", "green"))
    return out


def _window(text: str, column: int) -> tuple[str, int]:
    """A line longer than MAX_SHOWN, cut to MAX_SHOWN characters around `column`, with `…`
    where it was cut; and how many columns the cut moved everything left."""
    if len(text) <= MAX_SHOWN:
        return text, 0
    start = max(0, min(column - 1 - MAX_SHOWN // 4, len(text) - MAX_SHOWN))
    shown = text[start : start + MAX_SHOWN] + ("…" if start + MAX_SHOWN < len(text) else "")
    return ("…" + shown, start - 1) if start else (shown, 0)


def _caret_line(label: Label, text: str, gutter: int, shift: int = 0) -> tuple[str, str]:
    start = min(max(label.span.column - 1 - shift, 0), len(text))
    prefix = visible(text[:start]).expandtabs(4)
    if label.span.end_line == label.span.line:
        width = max(label.span.end_column - label.span.column, 1)
    else:
        width = max(len(text) - start, 1)
    width = min(width, max(len(text) - start, 1))
    width = max(len(visible(text[start : start + width])), 1)  # as many as the line shows
    mark = ("^" if label.primary else "-") * width
    style = "bold red" if label.primary else "bold blue"
    shown = visible(label.text)
    return (f"{' ' * gutter} | {' ' * len(prefix)}{mark} {shown}".rstrip(), style)


def render_rich(
    diagnostics: Sequence[Diagnostic], sources: Mapping[str, str], console: Console
) -> None:
    from rich.text import Text

    for diagnostic in diagnostics:
        for text, style in excerpt_lines(diagnostic, sources):
            console.print(Text(text, style=style), soft_wrap=True, highlight=False)
        console.print()


def summary(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = sum(d.severity is Severity.WARNING for d in diagnostics)
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts) if parts else "no problems"
