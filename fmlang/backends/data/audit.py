"""A hash-chained, append-only audit log of data access (one JSON object per line), with a
head beside it and, when FMC_AUDIT_KEY is set, an HMAC on every entry and on the head.

The format is in audit_chain.py; `fmc audit verify` (audit_verify.py) checks it. An append,
under an exclusive lock (`LOG.lock`):

1. checks that the log's last complete entry is the one the head records (or one the head
   lists as pending), and refuses otherwise: a truncated, extended or rewritten log gets no
   new entries, so no data is read, until someone looks (fail closed);
2. writes the head with the new entry listed as `pending`;
3. appends the entry to the log and fsyncs it;
4. writes the head again with the new count and hash.

A crash after 2 or 3 leaves a head whose pending entries explain the log exactly; the next
append writes whatever of them is missing. A crash during 3 (or a full disk) can leave a torn
last line: the next append copies it to `LOG.torn`, cuts it off, appends an entry that
records its offset, length and sha256, and then writes the interrupted entry in full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.backends.data import audit_problems as problems
from fmlang.backends.data.audit_chain import (
    GENESIS,
    QUARANTINE_EVENT,
    AuditKey,
    BadHead,
    Entry,
    Head,
    head_path,
    line_bytes,
    lock_path,
    read_head,
    seal,
    signing_key,
    sync_folder,
    torn_path,
    write_head,
)
from fmlang.errors import StageError


def append(log: Path, record: dict[str, Any]) -> Entry:
    """Append one entry for `record`, signed when FMC_AUDIT_KEY is set. When this returns,
    the entry and the head are on disk; when it raises StageError, the access it records must
    not happen (an append cut short by an I/O error is completed by the next one)."""
    return append_with_key(log, record, signing_key())


def append_with_key(log: Path, record: dict[str, Any], key: AuditKey | None) -> Entry:
    return append_many(log, [record], key)[-1]


def append_many(log: Path, records: Sequence[dict[str, Any]],
                key: AuditKey | None) -> tuple[Entry, ...]:  # fmt: skip
    """Append one entry per record, in order, as one append (one lock, one head update, one
    fsync of the log): what a writer that batches its records (`fmc serve`) uses."""
    if not records:
        return ()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with _locked(log):
            return _append_locked(log, records, key)
    except OSError as exc:
        raise StageError(problems.cannot_write(log, exc)) from None


@contextmanager
def _locked(log: Path) -> Iterator[None]:
    import fcntl

    with lock_path(log).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Tail:
    """The end of a log: its last complete line (without the newline), the offset where the
    complete lines end, and what follows them (a torn write; empty when there is none)."""

    last: bytes | None
    end: int
    fragment: bytes


def read_tail(path: Path, block: int = 1 << 16) -> Tail:
    """Read `path` backwards until its last complete line is found; a missing file is empty."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return Tail(None, 0, b"")
    with handle:
        start = handle.seek(0, os.SEEK_END)
        data = b""
        while start > 0 and data.count(b"\n") < 2:
            step = min(block, start)
            start -= step
            handle.seek(start)
            data = handle.read(step) + data
    cut = data.rfind(b"\n")
    if cut < 0:
        return Tail(None, 0, data)
    previous = data.rfind(b"\n", 0, cut)
    return Tail(data[previous + 1 : cut], start + cut + 1, data[cut + 1 :])


@dataclass(frozen=True)
class Base:
    """The last entry in the log that the head accounts for."""

    entries: int
    hash: str


def _append_locked(log: Path, records: Sequence[dict[str, Any]],
                   key: AuditKey | None) -> tuple[Entry, ...]:  # fmt: skip
    head = _checked_head(log, key)
    tail = read_tail(log)
    base, todo = _position(log, head, tail)
    if tail.fragment and not todo:
        line = base.entries + 1
        what = (
            f"line {line} ({len(tail.fragment)} bytes) is incomplete and no append was in progress"
        )
        raise StageError(problems.past_head(log, line, what, head, problems.writer_help(log)))
    if tail.fragment:
        todo = _quarantined(log, base, todo, tail, key)
    seq, prev = (todo[-1]["seq"], todo[-1]["hash"]) if todo else (base.entries, base.hash)
    written: list[Entry] = []
    for record in records:
        seq += 1
        written.append(seal({**record, "seq": seq, "time": _now(), "prev": prev}, key))
        prev = written[-1]["hash"]
    todo = (*todo, *written)
    write_head(log, base.entries, base.hash, todo, key)
    if tail.fragment:
        _truncate(log, tail.end)
    _write_lines(log, todo)
    write_head(log, base.entries + len(todo), prev, (), key)
    return tuple(written)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _checked_head(log: Path, key: AuditKey | None) -> Head | None:
    """The head, if its signing mode is the key's and its MAC verifies; refuses otherwise."""
    try:
        head = read_head(log)
    except BadHead as exc:
        raise StageError(problems.head_invalid(log, str(exc), problems.writer_help(log))) from None
    if head is None:
        return None
    if key is None and head.key_id is not None:
        raise StageError(problems.key_not_set(log, head.key_id, verifying=False))
    if key is not None and head.key_id != key.id:
        raise StageError(problems.key_unexpected(log, head, key.id))
    problem = head.signature_problem(key) if key else None
    if problem:
        raise StageError(problems.bad_signature(head_path(log), 1, "the audit head", problem,
                                                problems.writer_help(log)))  # fmt: skip
    return head


def _position(log: Path, head: Head | None, tail: Tail) -> tuple[Base, tuple[Entry, ...]]:
    """Where the log ends relative to its head, and the pending entries still to write."""
    help = problems.writer_help(log)
    last = _last_entry(log, tail, help)
    if head is None:
        if last is None:
            return Base(0, GENESIS), ()
        raise StageError(problems.head_missing(log, last["seq"], help))
    if last is None:
        if head.entries == 0:
            return Base(0, GENESIS), head.pending
        if not log.exists():
            raise StageError(problems.deleted(log, head, refusing=True))
        raise StageError(problems.truncated(log, 0, head, help))
    seq, digest = last["seq"], last["hash"]
    if (seq, digest) == (head.entries, head.hash):
        return Base(seq, digest), head.pending
    for done, pending in enumerate(head.pending, start=1):
        if (seq, digest) == (head.entries + done, pending["hash"]):
            return Base(seq, digest), head.pending[done:]
    if seq < head.entries:
        raise StageError(problems.truncated(log, seq, head, help))
    if seq > head.entries:
        what = f"its last entry is number {seq}; entries were appended without the head"
        raise StageError(problems.past_head(log, seq, what, head, help))
    reason = f"is not the one the head records (hash {head.hash[:16]}): the log was rewritten"
    raise StageError(problems.tampered(log, seq, reason, help, seq - 1))


def _last_entry(log: Path, tail: Tail, help: str) -> dict[str, Any] | None:
    if tail.last is None:
        return None
    try:
        entry = json.loads(tail.last)
    except (json.JSONDecodeError, UnicodeDecodeError):
        entry = None
    if not (isinstance(entry, dict) and isinstance(entry.get("seq"), int)
            and isinstance(entry.get("hash"), str)):  # fmt: skip
        with log.open("rb") as handle:
            line = sum(1 for _ in handle) - (1 if tail.fragment else 0)
        raise StageError(problems.tampered(log, line, "is not an audit entry", help, line - 1))
    return entry


def _quarantined(log: Path, base: Base, todo: tuple[Entry, ...], tail: Tail,
                 key: AuditKey | None) -> tuple[Entry, ...]:  # fmt: skip
    """Move the torn last line to LOG.torn; the entries to write instead: one recording
    that, then the interrupted entries, relinked after it."""
    digest = hashlib.sha256(tail.fragment).hexdigest()
    first = todo[0]
    if first.get("event") == QUARANTINE_EVENT and _records_fragment(first, tail.end, digest):
        return todo  # a repair of this very fragment was itself interrupted
    _keep_fragment(log, tail, digest, first)
    note = {
        "event": QUARANTINE_EVENT,
        "quarantine": torn_path(log).name,
        "offset": tail.end,
        "length": len(tail.fragment),
        "sha256": digest,
        "interrupted": first["hash"],
        "fragment_is_its_start": line_bytes(first).startswith(tail.fragment),
    }
    marker = seal({**note, "seq": base.entries + 1, "time": _now(), "prev": base.hash}, key)
    return (marker, *_relinked(todo, marker, key))


def _relinked(entries: tuple[Entry, ...], after: Entry, key: AuditKey | None) -> list[Entry]:
    out: list[Entry] = []
    for entry in entries:
        after = seal({**entry, "seq": after["seq"] + 1, "prev": after["hash"]}, key)
        out.append(after)
    return out


def _keep_fragment(log: Path, tail: Tail, digest: str, interrupted: Entry) -> None:
    """Append the fragment (exact bytes, as text with surrogate escapes) to LOG.torn, once."""
    target = torn_path(log)
    kept = read_tail(target)
    if kept.fragment:  # a quarantine write of its own was cut short: start a fresh line
        _write_bytes(target, b"\n")
    elif kept.last is not None and _same_fragment(kept.last, tail.end, digest):
        return  # kept by a repair that was interrupted before it truncated the log
    record = {
        "log": log.name,
        "offset": tail.end,
        "length": len(tail.fragment),
        "sha256": digest,
        "fragment": tail.fragment.decode("utf-8", "surrogateescape"),
        "interrupted_entry": interrupted,
        "time": _now(),
    }
    _write_bytes(target, (json.dumps(record, sort_keys=True) + "\n").encode("ascii"))


def _records_fragment(document: dict[str, Any], offset: int, digest: str) -> bool:
    """Is `document` (a quarantine entry or record) about the fragment at `offset`?"""
    return (document.get("offset"), document.get("sha256")) == (offset, digest)


def _same_fragment(line: bytes, offset: int, digest: str) -> bool:
    try:
        kept = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(kept, dict) and _records_fragment(kept, offset, digest)


def _truncate(log: Path, end: int) -> None:
    with log.open("r+b") as handle:
        handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())


def _write_lines(log: Path, entries: tuple[Entry, ...]) -> None:
    _write_bytes(log, b"".join(line_bytes(entry) for entry in entries))


def _write_bytes(path: Path, data: bytes) -> None:
    """Append `data` and fsync it (and the folder, when the file is new)."""
    created = not path.exists()
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        sync_folder(path.parent)
