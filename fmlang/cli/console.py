"""The rich consoles the CLI prints through.

On a terminal rich measures the real width. Piped into a file or a CI log there is no width
to measure and rich would assume 80 columns, squeezing every table until its cells wrap
into `r00_…` and `100…`: there, `$COLUMNS` decides when it is set, and otherwise the
console is wide enough that a table takes its natural width and every row stays one line.
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

UNBOUNDED = 1000  # columns of a console that is not a terminal and has no $COLUMNS


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def width_for(stream: IO[str]) -> int | None:
    """The width to give a console on `stream`; None lets rich measure the terminal."""
    if is_terminal(stream):
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else UNBOUNDED


def console(stderr: bool = False, quiet: bool = False, stream: IO[str] | None = None) -> Console:
    """A console on stdout (or stderr, or `stream`: kept even if sys.stderr is replaced
    later), without highlighting, at the width above."""
    from rich.console import Console

    file = stream or (sys.stderr if stderr else sys.stdout)
    return Console(file=file, highlight=False, quiet=quiet, width=width_for(file))
