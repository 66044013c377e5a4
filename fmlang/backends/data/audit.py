"""A hash-chained, append-only audit log of data access (one JSON object per line).

Each entry holds the sha256 of the previous entry (`prev`) and its own `hash` over its
canonical JSON without the `hash` field, so editing, deleting, reordering or inserting any
line breaks the chain at that line; `verify_log` finds the first broken line. (A chain
detects tampering with what it covers; truncating the tail is detected only against a
recorded head, which `verify_log(expect_head=…)` accepts.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(log: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append one entry (`record` plus seq, time, prev, hash) under an exclusive lock, and
    fsync it: an entry that returned is on disk."""
    import fcntl

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            last = _last_entry(log)
            entry = {
                **record,
                "seq": (last["seq"] + 1) if last else 1,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "prev": last["hash"] if last else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            handle.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return entry


def _last_entry(log: Path) -> dict[str, Any] | None:
    last: dict[str, Any] | None = None
    with log.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                last = json.loads(line)
    return last


@dataclass(frozen=True)
class Break:
    line: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    entries: int
    head: str
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_log(log: Path, expect_head: str | None = None) -> Verdict:
    """Walk the chain; the first line whose JSON, sequence, link or hash is wrong breaks it."""
    prev, count = GENESIS, 0
    with log.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            problem = _check_line(line, prev, count + 1)
            if problem:
                return Verdict(count, prev, Break(number, problem))
            prev, count = json.loads(line)["hash"], count + 1
    if expect_head is not None and prev != expect_head:
        return Verdict(count, prev, Break(count, "the log ends before the recorded head"))
    return Verdict(count, prev, None)


def _check_line(line: str, prev: str, seq: int) -> str | None:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return "not a JSON object"
    if not isinstance(entry, dict) or "hash" not in entry:
        return "not an audit entry"
    if entry.get("seq") != seq:
        return f"sequence number {entry.get('seq')} where {seq} was expected"
    if entry.get("prev") != prev:
        return "does not link to the entry before it"
    if entry_hash(entry) != entry["hash"]:
        return "its content does not match its hash (edited)"
    return None
