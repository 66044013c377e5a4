"""What the libraries print while a stage runs goes to the stage's log file, not the screen.

transformers, peft, datasets and accelerate log through Python's `logging`, draw tqdm bars
("Loading weights", one line per step when piped) on stderr, and emit warnings; torch's C++
side writes straight to file descriptors 1 and 2. While a stage runs, `captured` sends all
of it to `run/logs/<stage>.log` in the build folder: the libraries' loggers get a handler on
that file (at INFO, so the log has what a debugging user wants), `sys.stdout`/`sys.stderr`
point at it (tqdm, warnings, prints), and with `descriptors` so do fds 1 and 2 (the caller
must then print through a duplicate of the original stderr: `fmc run` does). Everything is
put back when the stage ends, however it ends.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import IO

LIBRARIES = ("transformers", "peft", "datasets", "accelerate", "huggingface_hub", "torch")
LOG_FOLDER = "run/logs"
_SCREEN: list[Callable[[str], None]] = []  # where `say` goes while output is captured


def say(line: str) -> None:
    """A note of fmc's own for the person running it (a checkpoint discarded, and why):
    on the screen even while a stage's library output goes to its log."""
    if _SCREEN:
        _SCREEN[-1](line)
    else:
        print(line, file=sys.stderr, flush=True)


def log_path(stage: str) -> str:
    """`run/logs/<stage>.log` relative to the build folder, the stage name made a file name:
    `labels:spam@comments.test` → `labels-spam@comments.test.log`."""
    return f"{LOG_FOLDER}/{re.sub(r'[^A-Za-z0-9_.@-]', '-', stage)}.log"


@contextmanager
def captured(
    build_dir: Path, stage: str, descriptors: bool = False, screen: Callable[[str], None] = print
) -> Iterator[Path]:
    """Send the libraries' output to the stage's log file (written afresh) while the body
    runs, and fmc's own notes (`say`) to `screen`; yields the file's path."""
    path = build_dir / log_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1) as log, ExitStack() as stack:
        _SCREEN.append(screen)
        stack.callback(_SCREEN.pop)
        stack.enter_context(_loggers(log))
        if descriptors:
            stack.enter_context(_descriptors(log))
        stack.enter_context(redirect_stdout(log))
        stack.enter_context(redirect_stderr(log))
        yield path


@contextmanager
def _loggers(log: IO[str]) -> Iterator[None]:
    """The libraries' loggers write to `log` alone; their handlers, levels and propagation
    come back afterwards."""
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


@contextmanager
def _descriptors(log: IO[str]) -> Iterator[None]:
    """File descriptors 1 and 2 point at `log` (C++ code and subprocesses write there)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        yield
    finally:
        log.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def can_capture_descriptors() -> bool:
    """Whether stdout and stderr are this process's fds 1 and 2 (not a test's buffers)."""
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        return False
