"""The quick fixes a diagnostic offers, as `Fix` edits of the document.

A diagnostic may carry its fixes (the verifier's smallest bound change does). The others
are read off what every diagnostic already says, in the words the checker writes them:

- "did you mean `X`?" (in the help or the message): the misspelt word under the primary
  label becomes X;
- an unknown name that the stdlib declares (FM0401): its `import std.<module>.<name>` is
  added after the document's last import;
- a number the unit was split from (`512 MiB`, FM0303): the space goes.
"""

from __future__ import annotations

import difflib
import re

from fmlang.check.units import UNIT_DIMENSION
from fmlang.diagnostics import Diagnostic, Fix, Span

DID_YOU_MEAN = re.compile(r"did you mean `([^`]+)`\?")
WORD = re.compile(r"[A-Za-z_][\w.]*")
_IMPORT_LINE = re.compile(r"^import\b", re.MULTILINE)
_SPLIT_UNIT = re.compile(r"^([ \t]+)([A-Za-z%][A-Za-z/]*)")
UNKNOWN_NAME = "FM0401"
NEEDS_UNIT = "FM0303"


def fixes_for(diagnostic: Diagnostic, file: str, text: str) -> list[Fix]:
    """Every fix of `diagnostic` that edits `file` (whose text is `text`)."""
    primary = diagnostic.primary_span
    found = [f for f in diagnostic.fixes if f.span.file == file]
    if primary is None or primary.file != file:
        return found
    for make in (_did_you_mean, _missing_import, _split_unit):
        fix = make(diagnostic, primary, text)
        if fix is not None:
            found.append(fix)
    return found


def _source_of(span: Span, text: str) -> str:
    lines = text.split("\n")
    if span.line != span.end_line or span.line > len(lines):
        return ""
    return lines[span.line - 1][span.column - 1 : span.end_column - 1]


def _did_you_mean(diagnostic: Diagnostic, primary: Span, text: str) -> Fix | None:
    said = DID_YOU_MEAN.search(diagnostic.help or "") or DID_YOU_MEAN.search(diagnostic.message)
    written = _source_of(primary, text)
    if said is None or not written:
        return None
    wanted = said.group(1)
    words = [m for m in WORD.finditer(written) if m.group() != wanted]
    if not words:
        return None
    best = max(words, key=lambda m: difflib.SequenceMatcher(None, m.group(), wanted).ratio())
    if difflib.SequenceMatcher(None, best.group(), wanted).ratio() < 0.5:
        return None
    start, end = primary.column + best.start(), primary.column + best.end()
    span = Span(primary.file, primary.line, start, primary.line, end)
    return Fix(f"change `{best.group()}` to `{wanted}`", span, wanted)


def _missing_import(diagnostic: Diagnostic, primary: Span, text: str) -> Fix | None:
    if diagnostic.code != UNKNOWN_NAME:
        return None
    from fmlang.lsp.catalog import stdlib_entries

    name = _source_of(primary, text)
    kinds = set(re.findall(r"`(\w+)`", diagnostic.message.split(" `" + name + "`")[0]))
    entry = next((e for e in stdlib_entries() if e.name == name and e.kind in kinds), None)
    if entry is None or _misspelt_import(text, entry.module, name):
        return None
    imports = list(_IMPORT_LINE.finditer(text))
    row = text.count("\n", 0, imports[-1].start()) + 2 if imports else 1
    spot = Span(primary.file, row, 1, row, 1)
    return Fix(f"import `{entry.dotted}`", spot, f"import {entry.dotted}\n")


def _misspelt_import(text: str, module: str, name: str) -> bool:
    """Whether an import from `std.<module>` already names `name` misspelt (its own
    did-you-mean fixes that; a second import would not)."""
    for line in re.findall(rf"^import\s+std\.{re.escape(module)}\.(.*)$", text, re.MULTILINE):
        for word in WORD.findall(line):
            if word != name and difflib.SequenceMatcher(None, word, name).ratio() >= 0.75:
                return True
    return False


def _split_unit(diagnostic: Diagnostic, primary: Span, text: str) -> Fix | None:
    if diagnostic.code != NEEDS_UNIT or primary.line != primary.end_line:
        return None
    line = text.split("\n")[primary.line - 1]
    after = _SPLIT_UNIT.match(line[primary.end_column - 1 :])
    if after is None or after.group(2) not in UNIT_DIMENSION:
        return None
    gap = Span(
        primary.file, primary.line, primary.end_column, primary.line,
        primary.end_column + len(after.group(1)),
    )  # fmt: skip
    number = _source_of(primary, text)
    return Fix(f"write `{number}{after.group(2)}` without the space", gap, "")
