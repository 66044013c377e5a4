"""Complete checkpoints: which ones may be resumed from, and which to remove.

The Trainer writes `checkpoints/checkpoint-<step>/` file by file. A checkpoint counts as
complete only once `fm_checkpoint.json` has been written into it (atomically, after the
Trainer's last file and after every process has finished saving). A process killed half-way
leaves a folder without the marker: it is never resumed from, and the next run removes it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fmlang.atomic import write_text_atomic

MARKER = "fm_checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


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
    """The complete checkpoint with the highest step, if any."""
    complete = [path for path in checkpoint_steps(folder).values() if is_complete(path)]
    return complete[-1] if complete else None


def mark_complete(checkpoint: Path, step: int) -> None:
    write_text_atomic(checkpoint / MARKER, json.dumps({"step": step}, sort_keys=True) + "\n")


def remove_incomplete(folder: Path) -> list[Path]:
    """Remove checkpoint folders without the marker (left by a killed run)."""
    removed = []
    for path in checkpoint_steps(folder).values():
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def rotate(folder: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints (all when None); never touch a folder
    that is not complete, since another process may still be writing it."""
    if keep is None:
        return
    complete = [path for path in checkpoint_steps(folder).values() if is_complete(path)]
    for path in complete[: max(0, len(complete) - max(keep, 1))]:
        (path / MARKER).unlink()  # first, so a half-removed folder is never taken as complete
        shutil.rmtree(path, ignore_errors=True)
