"""Reading the build folder's artifacts: `fmc run` executes what `fmc build` wrote.

A missing or unreadable artifact is FM0720 at the declaration it belongs to, with the fix
(rebuild); nothing falls back to lowering the spec again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.base import SourceSpan


def read_text(build_dir: Path, relative: str, owner: str, span: SourceSpan | None) -> str:
    """The artifact's text; FM0720 (pointing at `owner`'s declaration) when it cannot be read."""
    try:
        return (build_dir / relative).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(relative, owner, span, exc) from exc


def read_json(build_dir: Path, relative: str, owner: str, span: SourceSpan | None) -> Any:
    text = read_text(build_dir, relative, owner, span)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _unreadable(relative, owner, span, exc) from exc


def mismatch(relative: str, owner: str, span: SourceSpan | None, what: str) -> StageError:
    """An artifact that no longer fits the spec's structure (edited beyond its values)."""
    return _unreadable(relative, owner, span, ValueError(what))


def _unreadable(relative: str, owner: str, span: SourceSpan | None, exc: Exception) -> StageError:
    return StageError(
        error(
            "FM0720",
            f"the build folder's `{relative}` cannot be used: {exc}",
            span.to_span() if span else None,
            f"`{owner}` runs from this artifact",
            help="run `fmc build` again (or delete the build folder's fm.lock.json so that "
            "`fmc run` rebuilds it)",
        )
    )
