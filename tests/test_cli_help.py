"""The cached top-level help printed by the fast path is exactly what click renders."""

from __future__ import annotations

import subprocess
import sys

from fmlang.cli.help_text import HELP
from fmlang.cli.main import render_help


def test_cached_help_matches_click() -> None:
    assert render_help() == HELP, "commands changed: run `make help-text`"


def test_fast_path_prints_the_cached_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fmlang", "--help"], capture_output=True, text=True, check=True
    )
    assert done.stdout == HELP
    assert (
        "click"
        not in subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "fmlang", "-h"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    )
