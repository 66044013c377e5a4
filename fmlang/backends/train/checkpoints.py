"""Complete, verified checkpoints: which one to resume from, and which to remove.

The Trainer (or the DP-SGD loop) writes `checkpoints/checkpoint-<step>/` file by file. A
checkpoint counts as complete only once `fm_checkpoint.json` has been written into it
(atomically, after the last file and after every process has finished saving); the marker
records the sha256 of every file in the folder. A process killed half-way leaves a folder
without the marker; a bit flip, a truncation or a file removed later leaves one whose files
no longer match it. Neither is ever resumed from: `resumable` removes them, newest first,
says why, and falls back to the newest checkpoint whose every byte is as it was written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fmlang.atomic import write_text_atomic
from fmlang.backends.cache import digests, first_difference

MARKER = "fm_checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_INCOMPLETE = "incomplete (the run writing it stopped before it was marked complete)"


def checkpoint_steps(folder: Path) -> dict[int, Path]:
    """Every `checkpoint-<step>` folder under `folder`, by step."""
    if not folder.is_dir():
        return {}
    found = {}
    for child in folder.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / MARKER).is_file()


def last_complete(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step, if any (its files not verified)."""
    complete = [path for path in checkpoint_steps(folder).values() if is_complete(path)]
    return complete[-1] if complete else None


def _contents(checkpoint: Path) -> list[str]:
    return sorted(child.name for child in checkpoint.iterdir() if child.name != MARKER)


def mark_complete(checkpoint: Path, step: int) -> None:
    """Write the marker: the step and the sha256 of every file saved in the checkpoint."""
    document = {"step": step, "files": digests(checkpoint, _contents(checkpoint))}
    write_text_atomic(checkpoint / MARKER, json.dumps(document, indent=1, sort_keys=True) + "\n")


def damage(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (incomplete, an unreadable marker, a file
    missing, changed or added since it was marked), or None when it verifies."""
    try:
        marker = json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _INCOMPLETE
    except (OSError, ValueError) as exc:
        return f"its marker `{MARKER}` cannot be read ({exc})"
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict):
        return f"its marker `{MARKER}` records no digests (written by an older fmc)"
    return first_difference(checkpoint, _contents(checkpoint), files)


def remove_incomplete(folder: Path) -> list[Path]:
    """Remove checkpoint folders without the marker (left by a killed run)."""
    removed = [path for path in checkpoint_steps(folder).values() if not is_complete(path)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def resumable(folder: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, after removing every incomplete checkpoint and
    every damaged one newer than it; with a line for each removed, saying why."""
    said = [f"discarded `{path.name}`: {_INCOMPLETE}" for path in remove_incomplete(folder)]
    for path in reversed(checkpoint_steps(folder).values()):
        why = damage(path)
        if why is None:
            return path, said
        (path / MARKER).unlink(missing_ok=True)  # first: a half-removed folder is incomplete
        shutil.rmtree(path, ignore_errors=True)
        said.append(f"discarded `{path.name}`: {why}")
    return None, said


def rotate(folder: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints (all when None); never touch a folder
    that is not complete, since another process may still be writing it."""
    if keep is None:
        return
    complete = [path for path in checkpoint_steps(folder).values() if is_complete(path)]
    for path in complete[: max(0, len(complete) - max(keep, 1))]:
        (path / MARKER).unlink()  # first, so a half-removed folder is never taken as complete
        shutil.rmtree(path, ignore_errors=True)
