"""Atomic writes: a reader sees the old file or the new one, never half of either; and the
file modes of what `fmc run` writes.

A file written here is no more open than the folder it lands in: in a folder others cannot
enter (the build's `run/` and `registry/`, 0700) it is 0600, elsewhere the umask decides.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PRIVATE = 0o077  # the permission bits of group and others


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode(folder: Path) -> int:
    """0666 less the umask, and less every class (group, others) that cannot search
    `folder`: a file is never more open than the folder that holds it."""
    mode = 0o666 & ~_current_umask()
    try:
        folder_mode = folder.stat().st_mode
    except OSError:
        return mode
    for search, bits in ((0o010, 0o070), (0o001, 0o007)):
        if not folder_mode & search:
            mode &= ~bits
    return mode


def make_private(path: Path) -> None:
    """Take group and other access away from `path` (a file or a folder) if it exists and is
    ours; another account's file keeps the modes its owner chose."""
    try:
        info = path.stat()
    except OSError:  # missing (or unreachable: the write that follows reports it)
        return
    mode = info.st_mode & 0o7777
    if mode & PRIVATE and info.st_uid == os.geteuid():
        os.chmod(path, mode & ~PRIVATE)


@contextmanager
def private_files() -> Iterator[None]:
    """Everything the process creates in the block (by fmc, DuckDB, torch or a subprocess)
    is for its owner alone: the umask gains group and other bits, restored afterwards."""
    previous = os.umask(0)
    os.umask(previous | PRIVATE)
    try:
        yield
    finally:
        os.umask(previous)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write by any means (a DuckDB COPY, pyarrow); renamed
    onto `path` when the block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode(path.parent))  # mkstemp creates the file 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(document: Any) -> str:
    """The one form of every JSON file fmc writes: sorted keys, two-space indent, UTF-8,
    a final newline (stable bytes, so artifacts diff and hash cleanly)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, document: Any) -> None:
    write_text_atomic(path, json_text(document))
