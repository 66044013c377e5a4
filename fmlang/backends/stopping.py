"""Stop at the next safe point: SIGINT and SIGTERM sent to `fmc run` ask for a stop instead of
killing the process mid-write.

`fmc run` installs the handlers (`requests()`); the stage runner checks `requested()`
between stages, and the trainer between optimizer steps, where it saves a checkpoint first.
Whoever stops raises `Interrupted`, which the CLI turns into a clean exit (128 + the signal's
number, the shell's convention) with a note on how to resume. A second signal while the first
is being honoured restores the default behaviour, so a stuck process can still be killed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: signal.Signals | None = None


class Interrupted(Exception):
    """The run stopped at a safe point because a signal asked it to."""

    def __init__(self, signum: signal.Signals, where: str) -> None:
        super().__init__(f"{signum.name} received; stopped {where}")
        self.signum = signum
        self.where = where

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def requested() -> signal.Signals | None:
    """The signal that asked for a stop, if one did."""
    return _requested


def check(where: str) -> None:
    """Raise `Interrupted` if a stop was requested; `where` says what was finished."""
    if _requested is not None:
        raise Interrupted(_requested, where)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is not None:  # asked twice: give the signal its default effect
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(signal.Signals(signum))
        return
    _requested = signal.Signals(signum)


@contextmanager
def requests() -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM request a stop (main thread only; elsewhere a
    no-op). The previous handlers come back on exit."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    _requested = None
    for sig in _SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested = None
