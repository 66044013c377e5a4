"""One `fmc run` per build folder at a time.

Two runs writing the same stage outputs, checkpoints and cache would corrupt each other, so
a run holds an exclusive `flock` on `<build>/run.lock` for its whole life. The kernel drops
the lock when the process dies (kill -9 included), so a stale lock file never blocks a
later run. A second run refuses at once (FM0721) naming the holder, or with `--wait` waits
for it to finish.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fmlang.diagnostics import error
from fmlang.errors import StageError

LOCK_FILE = "run.lock"


@contextmanager
def exclusive(build_dir: Path, wait: bool = False) -> Iterator[None]:
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            raise StageError(
                error(
                    "FM0721",
                    f"the build folder `{build_dir}` is in use by another `fmc run` (pid {holder})",
                    help="wait for it to finish, or pass `--wait` to queue behind it",
                )
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
