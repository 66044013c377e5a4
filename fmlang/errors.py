"""The exception a build or run stage raises for a user-facing failure."""

from __future__ import annotations

from fmlang.diagnostics import Diagnostic


class StageError(Exception):
    """A failure the user can fix, carried as diagnostics (each with a code, a location
    where one exists, what is wrong and how to fix it). The CLI renders them and exits 1,
    or 2 when every one is an I/O problem."""

    def __init__(self, *diagnostics: Diagnostic) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics = list(diagnostics)
