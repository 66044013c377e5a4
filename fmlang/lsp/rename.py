"""Rename a declared name (a dataset, labels block, model, merge, constant, split, labeling
function, or a base model or hardware profile the user declared) everywhere it is used: in
the document, in the file that declares it, and in every file that imports it.

Columns and classes are not renamed: their names are the data's (a CSV header, a label
value), which an edit of the spec cannot change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lsprotocol import types

from fmlang.lsp.documents import STD_PREFIX, Snapshot, file_uri
from fmlang.lsp.index import Mark, Target, at, marks_of

RENAMABLE = ("dataset", "labels", "model", "merge", "let", "split", "lf", "base_model", "hardware")
TOP_LEVEL = ("dataset", "labels", "model", "merge", "let", "base_model", "hardware")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SKIPPED_FOLDERS = {".fm-build", ".git", ".venv", "node_modules", "__pycache__"}
MAX_FILES = 2000


class RenameRefused(ValueError):
    """Why a rename cannot be done, in the user's words (sent back as the request's error)."""


def renamable_at(snapshot: Snapshot, position: types.Position) -> Mark | None:
    line, column = snapshot.lines().line_column(position)
    mark = at(marks_of(snapshot), line, column, ("decl", "ref"))
    if mark is None or mark.target is None:
        return None
    target = mark.target
    if target.kind not in RENAMABLE or target.span.file.startswith(STD_PREFIX):
        return None
    return mark


def prepare_rename(snapshot: Snapshot, position: types.Position) -> types.Range | None:
    mark = renamable_at(snapshot, position)
    return snapshot.lines().range(mark.span) if mark is not None else None


def rename(
    snapshot: Snapshot, position: types.Position, new_name: str, others: Iterable[Snapshot]
) -> types.WorkspaceEdit:
    """The edits renaming what is at `position` to `new_name` in this document and `others`
    (the other files that may use it, already checked)."""
    mark = renamable_at(snapshot, position)
    if mark is None or mark.target is None:
        raise RenameRefused("nothing renamable here: put the cursor on a declared name")
    target = mark.target
    _check_new_name(snapshot, target, new_name)
    changes: dict[str, list[types.TextEdit]] = {}
    declared = False
    for doc in (snapshot, *others):
        for found in marks_of(doc):
            if found.target == target:
                declared = declared or found.role == "decl"
                edit = types.TextEdit(doc.lines().range(found.span), new_name)
                changes.setdefault(doc.uri, []).append(edit)
    if not declared:  # declared in a file none of the snapshots is: the checker loaded it
        edit = types.TextEdit(snapshot.lines(target.span.file).range(target.span), new_name)
        changes.setdefault(file_uri(target.span.file), []).append(edit)
    return types.WorkspaceEdit(changes={uri: _unique(edits) for uri, edits in changes.items()})


def _check_new_name(snapshot: Snapshot, target: Target, new_name: str) -> None:
    if not IDENTIFIER.fullmatch(new_name):
        raise RenameRefused(
            f"`{new_name}` is not a name: use letters, digits and `_`, not starting with a digit"
        )
    if new_name == target.name:
        raise RenameRefused(f"`{target.name}` already has that name")
    scope = snapshot.result.program.scopes.get(snapshot.file, {})
    if target.kind in TOP_LEVEL and new_name in scope:
        clash = scope[new_name]
        raise RenameRefused(
            f"`{new_name}` is already a `{clash.kind}` (line {clash.span.line} of "
            f"{clash.span.file}): pick another name"
        )


def _unique(edits: list[types.TextEdit]) -> list[types.TextEdit]:
    seen: dict[tuple[int, int, int, int], types.TextEdit] = {}
    for edit in edits:
        r = edit.range
        seen.setdefault((r.start.line, r.start.character, r.end.line, r.end.character), edit)
    return list(seen.values())


def candidate_files(roots: Iterable[Path], name: str, skip: set[Path]) -> list[Path]:
    """The `.fm` files under `roots` that mention `name` (and so may use it), not in `skip`;
    at most MAX_FILES files are read."""
    found: list[Path] = []
    seen: set[Path] = set(skip)
    for root in roots:
        for path in _fm_files(root):
            if path in seen:
                continue
            if len(seen) >= MAX_FILES:
                return found
            seen.add(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if re.search(rf"\b{re.escape(name)}\b", text):
                found.append(path)
    return found


def _fm_files(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name not in SKIPPED_FOLDERS and not path.name.startswith("."):
            yield from _fm_files(path)
        elif path.suffix == ".fm" and path.is_file():
            yield path.resolve()
