"""The `fmc` console script. `fmc -h` and `fmc --help` print the top-level help from
a cached copy without importing click (which alone costs ~2x a bare interpreter start);
`tests/test_cli_help.py` keeps the copy identical to what click renders."""

from __future__ import annotations

import sys

HELP_ARGS = (("-h",), ("--help",))


def main() -> None:
    if tuple(sys.argv[1:]) in HELP_ARGS:
        from fmlang.cli.help_text import HELP

        sys.stdout.write(HELP)
        sys.exit(0)
    from fmlang.cli.main import main as full_main

    full_main()
