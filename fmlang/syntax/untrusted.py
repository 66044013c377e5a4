"""Checks on text that may come from anyone, made before anything trusts or quotes it.

- Invisible bidirectional controls (FM0108, "Trojan Source"): U+202A-U+202E and
  U+2066-U+2069 reorder how an editor or a review tool displays a line, so a string or a
  comment can hide code that reads differently from what fmc compiles. Each is an error at its
  position; the renderer shows them as `<U+202E>`, never raw.
- `starts_like_spec`: whether a file's first token begins a declaration, the test for
  quoting a file that is not named `*.fm` (see the loader).
"""

from __future__ import annotations

import re
import unicodedata

from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.diagnostics.render import BIDI_CONTROLS, BIDI_PATTERN

MAX_REPORTED = 10  # per file; the last one says how many more there are

TOP_LEVEL_WORDS = frozenset(
    ("import", "let", "dataset", "labels", "model", "merge", "constraints", "deploy",
     "base_model", "hardware")
)  # fmt: skip
_SKIPPED = re.compile(r"(?:[ \t\f\r\n]+|#[^\n]*)*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def bidi_diagnostics(text: str, file: str) -> tuple[Diagnostic, ...]:
    """FM0108 for each bidirectional control in `text` (the first MAX_REPORTED of them)."""
    if not any(c in text for c in BIDI_CONTROLS):
        return ()
    found = list(BIDI_PATTERN.finditer(text))
    out = []
    for number, match in enumerate(found[:MAX_REPORTED], start=1):
        more = len(found) - MAX_REPORTED if number == MAX_REPORTED else 0
        out.append(_bidi_error(text, file, match.start(), more))
    return tuple(out)


def _bidi_error(text: str, file: str, offset: int, more: int) -> Diagnostic:
    char = text[offset]
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    span = Span(file, line, column, line, column + 1, offset, offset + 1)
    name = unicodedata.name(char, "BIDIRECTIONAL CONTROL")
    notes = (f"{more} more bidirectional control{'s' * (more != 1)} in this file",)
    return error(
        "FM0108",
        f"invisible bidirectional control U+{ord(char):04X} ({name}) in the spec",
        span,
        "reorders how this line is displayed",
        help="delete it: editors and reviews show the line in another order than fmc reads "
        "it (Trojan Source); right-to-left letters display correctly without it",
        notes=notes if more else (),
    )


def starts_like_spec(text: str) -> bool:
    """Whether the first token after blanks and comments begins a declaration (or there is
    none): `import`, `dataset`, `model`, ..."""
    text = text.lstrip("\ufeff")
    skipped = _SKIPPED.match(text)
    rest = text[skipped.end() if skipped else 0 :]
    if not rest:
        return True
    word = _WORD.match(rest)
    return word is not None and word.group() in TOP_LEVEL_WORDS
