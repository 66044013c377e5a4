"""The table of diagnostic codes in docs/reference.md, generated from the registry.

`python -m fmlang.diagnostics.doc_table` (or `make doc-codes`) rewrites the lines between the
two markers of docs/reference.md; `--check` only says whether they are up to date (exit 1
when not). tests/test_docs.py fails while the doc and the registry differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fmlang.diagnostics.codes import CODES

BEGIN = "<!-- codes: generated from fmlang/diagnostics/codes*.py by `make doc-codes` -->"
END = "<!-- codes: end -->"
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def code_table() -> str:
    """One row per registered code, in order; usage and I/O problems (exit 2) say so."""
    rows = ["| code | title |", "|---|---|"]
    for code, entry in CODES.items():
        title = entry.title.replace("|", "\\|")
        rows.append(f"| `{code}` | {title}{' (exit 2)' if entry.io else ''} |")
    return "\n".join(rows) + "\n"


def with_table(text: str) -> str:
    """`text` with the lines between the markers replaced by the generated table."""
    head, begin, rest = text.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the markers `{BEGIN}` and `{END}` are not both there")
    return f"{head}{begin}\n{code_table()}\n{end}{tail}"


def main(argv: list[str]) -> int:
    text = REFERENCE.read_text(encoding="utf-8")
    updated = with_table(text)
    if "--check" in argv:
        if updated != text:
            print(f"{REFERENCE}: the code table differs from the registry; run `make doc-codes`")
            return 1
        return 0
    if updated != text:
        REFERENCE.write_text(updated, encoding="utf-8")
        print(f"rewrote the code table in {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
