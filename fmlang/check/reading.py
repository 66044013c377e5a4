"""Reading a spec file without trusting it: bounded, regular files only, text only.

A path may name anything: a FIFO that never ends, `/dev/zero`, a directory, a file that
grows while it is read, a binary. So a file is opened without blocking, refused unless it is
a regular file (before a byte is read; the null device reads as an empty file), and read up
to one byte past its limit: a size over the limit refuses it unread, but a size under it is
not trusted. Bytes that are not UTF-8 text (a NUL byte, an invalid sequence) are refused
without being quoted.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fmlang.diagnostics import Diagnostic, Span, error
from fmlang.syntax.parser import MAX_SOURCE_BYTES

CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFile(OSError):
    """The path names a directory, pipe, device or socket: nothing a spec can be."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at `path`, or None when it holds more than `limit`
    (known from its size, or from reading one byte past the limit). The null device reads as
    an empty file. Raises NotARegularFile, or the OSError of the open."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except (IsADirectoryError, PermissionError):
        if path.is_dir():  # Windows refuses to open a directory at all
            raise NotARegularFile("a directory") from None
        raise
    try:
        status = os.fstat(fd)
        if _is_null_device(status):
            return b""
        if not stat.S_ISREG(status.st_mode):
            kind = next((k for test, k in _KINDS if test(status.st_mode)), "not a file")
            raise NotARegularFile(kind)
        return None if status.st_size > limit else _read_at_most(fd, limit)
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    left = limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, CHUNK))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        left -= len(chunk)
    return None  # the file grew past its size, or reports none (as /proc files do)


def _is_null_device(status: os.stat_result) -> bool:
    if not stat.S_ISCHR(status.st_mode):
        return False
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(null.st_mode) and status.st_rdev == null.st_rdev


@dataclass(frozen=True)
class Read:
    """A file's text, or why there is none: `problem`, and for a file that cannot be read
    at all (FM0001) the `reason` alone. `size`: the bytes read, toward the program's budget."""

    text: str | None
    problem: Diagnostic | None = None
    reason: str = ""
    size: int = 0


def read_spec(path: Path, shown: str, limit: int = MAX_SOURCE_BYTES) -> Read:
    """The file's text, or the I/O (FM0001), encoding (FM0002) or size (FM0003) problem.
    `limit` may be below MAX_SOURCE_BYTES when the program's budget is nearly spent: a file
    over it then comes back with neither text nor problem, and `size` limit + 1."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return _unreadable(shown, "no such file", "check the path; specs usually end in `.fm`")
    except NotARegularFile as exc:
        return _unreadable(shown, f"it is {exc.kind}", "name the spec file itself, e.g. `spec.fm`")
    except OSError as exc:
        return _unreadable(shown, str(exc.strerror or exc), None)
    if data is None:
        return Read(None, _too_large(shown) if limit >= MAX_SOURCE_BYTES else None, size=limit + 1)
    return _decode(data, shown)


def _unreadable(shown: str, reason: str, help: str | None) -> Read:
    problem = error("FM0001", f"cannot read `{shown}`: {reason}", None, help=help)
    return Read(None, problem, reason)


def _too_large(shown: str) -> Diagnostic:
    return error(
        "FM0003",
        f"`{shown}` is too large to be a spec (over {MAX_SOURCE_BYTES:,} bytes)",
        Span(shown, 1, 1, 1, 1),
        help='split it into files joined with `import "file.fm"`',
    )


def _decode(data: bytes, shown: str) -> Read:
    if b"\x00" in data:
        return Read(None, error("FM0002", f"`{shown}` is a binary file, not a .fm spec",
                                Span(shown, 1, 1, 1, 1), help="pass a UTF-8 text file"),
                    size=len(data))  # fmt: skip
    try:
        return Read(data.decode("utf-8-sig"), size=len(data))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = Span(shown, line, column, line, column + 1, exc.start, exc.start + 1)
        problem = error("FM0002", f"`{shown}` is not valid UTF-8 (byte {exc.start})", bad,
                        "invalid byte", help="save the file as UTF-8")  # fmt: skip
        return Read(None, problem, size=len(data))
