"""Where the grammar and the standard library live, from a checkout or a wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """`grammar` or `stdlib`: inside the wheel (`fmlang/_data/`) or at the checkout root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fmc installation is missing its {name}/ folder")


def grammar_file() -> Path:
    return data_dir("grammar") / "fm.lark"


def stdlib_dir() -> Path:
    return data_dir("stdlib")
