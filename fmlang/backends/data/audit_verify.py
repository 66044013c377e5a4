"""`fmc audit verify`: walk the audit log's chain, check every MAC when a key is given, and
compare where the log ends with its head (and, optionally, with a head recorded elsewhere).

The walk stops at the first line that does not verify: nothing after it can be trusted.
What is and is not detected is documented in docs/reference.md (the audit log).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.backends.data import audit_problems as problems
from fmlang.backends.data.audit_chain import (
    GENESIS,
    QUARANTINE_EVENT,
    AuditKey,
    BadHead,
    Head,
    entry_hash,
    entry_signature_problem,
    head_path,
    line_bytes,
    read_head,
    torn_path,
)
from fmlang.diagnostics import Diagnostic, Severity


@dataclass(frozen=True)
class Anchor:
    """A head recorded somewhere the log's writers cannot change: entry `entries` must
    still be in the log, with a hash that starts with `hash`."""

    entries: int
    hash: str


@dataclass(frozen=True)
class Verdict:
    log: Path
    entries: int  # the entries that verify, from the first
    head: str  # the hash of the last of them
    key_id: str | None  # the key every MAC was checked with; None when unsigned
    diagnostics: tuple[Diagnostic, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)


@dataclass
class Walk:
    """What reading the log found: entries that verify, the hashes from `keep_from` on,
    the key ids seen, the torn last line, and where the chain broke."""

    keep_from: int
    entries: int = 0
    last: str = GENESIS
    hashes: dict[int, str] = field(default_factory=dict)
    key_ids: set[str] = field(default_factory=set)
    quarantines: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    fragment: bytes = b""
    broken: Diagnostic | None = None


def verify_log(log: Path, key: AuditKey | None = None, anchor: Anchor | None = None) -> Verdict:
    """Check `log` and its head; every problem is a diagnostic."""
    found: list[Diagnostic] = []
    head = _load_head(log, key, found)
    if any(d.code == "FM0708" for d in found):
        return Verdict(log, 0, GENESIS, None, tuple(found))
    marks = [head.entries] if head else []
    marks += [anchor.entries] if anchor else []
    walk = _read(log, key, head, min(marks, default=0))
    if isinstance(walk, Diagnostic):
        return Verdict(log, 0, GENESIS, None, (*found, walk))
    if walk.broken is not None:
        found.append(walk.broken)
    else:
        head_invalid = any(d.code == "FM0714" for d in found)
        found += [] if head_invalid else _against_head(log, head, walk)
        found += _against_anchor(log, anchor, walk)
    if key is None:
        found += _unchecked_signatures(log, head, walk)
    key_id = key.id if key else None
    return Verdict(log, walk.entries, walk.last, key_id, tuple(found), _quarantine_notes(log, walk))


def _load_head(log: Path, key: AuditKey | None, found: list[Diagnostic]) -> Head | None:
    try:
        head = read_head(log)
    except BadHead as exc:
        found.append(problems.head_invalid(log, str(exc), problems.evidence_help(log)))
        return None
    except OSError as exc:
        found.append(problems.cannot_read(head_path(log), exc))
        return None
    problem = head.signature_problem(key) if head and key else None
    if problem:
        found.append(problems.bad_signature(head_path(log), 1, "the audit head", problem,
                                            problems.evidence_help(log)))  # fmt: skip
    return head


def _read(log: Path, key: AuditKey | None, head: Head | None, keep_from: int) -> Walk | Diagnostic:
    """Walk the log; a missing log is empty only when the head says the first append was
    interrupted before it wrote anything."""
    try:
        return _walk(log, key, keep_from)
    except FileNotFoundError as exc:
        if head is not None and head.entries > 0:
            return problems.deleted(log, head, refusing=False)
        if head is not None and head.pending:
            return Walk(keep_from)
        return problems.cannot_read(log, exc)
    except OSError as exc:
        return problems.cannot_read(log, exc)


def _walk(log: Path, key: AuditKey | None, keep_from: int) -> Walk:
    walk = Walk(keep_from)
    with log.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                walk.fragment = raw
                break
            entry, broken = _entry(log, raw, walk, key)
            if entry is None:
                walk.broken = broken
                break
            _take(walk, number, entry)
    return walk


def _take(walk: Walk, number: int, entry: dict[str, Any]) -> None:
    walk.entries, walk.last = number, entry["hash"]
    if number >= walk.keep_from:
        walk.hashes[number] = entry["hash"]
    if isinstance(entry.get("key_id"), str):
        walk.key_ids.add(entry["key_id"])
    if entry.get("event") == QUARANTINE_EVENT:
        walk.quarantines.append((number, entry))


def _entry(log: Path, raw: bytes, walk: Walk,
           key: AuditKey | None) -> tuple[dict[str, Any] | None, Diagnostic | None]:  # fmt: skip
    """The entry on the next line, or the diagnostic that says why it does not verify."""
    line, help = walk.entries + 1, problems.evidence_help(log)
    entry, reason = _chain_entry(raw, walk.last, line)
    if entry is None:
        return None, problems.tampered(log, line, reason, help, walk.entries)
    problem = entry_signature_problem(entry, key) if key else None
    if problem:
        return None, problems.bad_signature(log, line, f"entry on line {line}", problem, help)
    return entry, None


def _chain_entry(raw: bytes, prev: str, seq: int) -> tuple[dict[str, Any] | None, str]:
    """The entry on a line, or None and why it does not link into the chain."""
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, "is not a JSON object"
    if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
        return None, "is not an audit entry"
    if entry.get("seq") != seq:
        return None, f"carries sequence number {entry.get('seq')} where {seq} was expected"
    if entry.get("prev") != prev:
        return None, "does not link to the entry before it (removed, inserted or reordered)"
    if entry_hash(entry) != entry["hash"]:
        return None, "does not match its hash (edited)"
    return entry, ""


def _against_head(log: Path, head: Head | None, walk: Walk) -> list[Diagnostic]:
    """Does the log end where its head says (or where an interrupted append left it)?"""
    help = problems.evidence_help(log)
    if head is None:
        if walk.entries or walk.fragment:
            return [problems.head_missing(log, walk.entries, help)]
        return [problems.cannot_read(log, "it is empty and has no head: nothing to verify")]
    if walk.entries < head.entries:
        return [problems.truncated(log, walk.entries, head, help)]
    if walk.hashes.get(head.entries, GENESIS) != head.hash:
        reason = f"is not the one the head records (hash {head.hash[:16]}): the log was rewritten"
        return [problems.tampered(log, head.entries, reason, help, head.entries - 1)]
    extra = [walk.hashes[n] for n in range(head.entries + 1, walk.entries + 1)]
    written = 0
    while written < min(len(extra), len(head.pending)) and (
        extra[written] == head.pending[written]["hash"]
    ):
        written += 1
    if written < len(extra):
        line = head.entries + written + 1
        which = (
            f"entry {line} was"
            if line == walk.entries
            else f"entries {line} to {walk.entries} were"
        )
        what = f"{which} appended without updating the head"
        return [problems.past_head(log, line, what, head, help)]
    return _interrupted(log, head, walk, written)


def _interrupted(log: Path, head: Head, walk: Walk, written: int) -> list[Diagnostic]:
    """Pending entries in the head: an append stopped part-way (a warning), unless a torn
    line is left that no pending entry explains."""
    line = walk.entries + 1
    todo = head.pending[written:]
    if walk.fragment and not todo:
        what = (
            f"line {line} ({len(walk.fragment)} bytes) is incomplete and no append was in progress"
        )
        return [problems.past_head(log, line, what, head, problems.evidence_help(log))]
    if walk.fragment:
        start = "" if line_bytes(todo[0]).startswith(walk.fragment) else "not "
        what = (
            f"line {line} is torn ({len(walk.fragment)} bytes, no newline: a crash or a full "
            f"disk); it is {start}the start of entry {line}, which the head lists as pending "
            f"(hash {todo[0]['hash'][:16]})"
        )
        return [problems.interrupted(log, line, what)]
    if head.pending:
        what = (
            f"the head lists {len(head.pending)} pending entries (from number "
            f"{head.entries + 1}), of which {written} reached the log before the head was "
            "updated"
        )
        return [problems.interrupted(log, max(walk.entries, 1), what)]
    return []


def _against_anchor(log: Path, anchor: Anchor | None, walk: Walk) -> list[Diagnostic]:
    if anchor is None or anchor.entries == 0:
        return []
    help = (
        "the log and its head were both rolled back or rewritten since the anchor was "
        "recorded: " + problems.evidence_help(log)
    )
    if walk.entries < anchor.entries:
        head = Head(anchor.entries, anchor.hash)
        return [problems.truncated(log, walk.entries, head, help)]
    if not walk.hashes[anchor.entries].startswith(anchor.hash):
        reason = f"is not the one recorded in the anchor (hash {anchor.hash})"
        return [problems.tampered(log, anchor.entries, reason, help, anchor.entries - 1)]
    return []


def _unchecked_signatures(log: Path, head: Head | None, walk: Walk) -> list[Diagnostic]:
    key_id = (head.key_id if head else None) or min(walk.key_ids, default=None)
    return [problems.key_not_set(log, key_id, verifying=True)] if key_id else []


def _quarantine_notes(log: Path, walk: Walk) -> tuple[str, ...]:
    """Each torn line a past append moved aside, and whether its bytes are still kept."""
    if not walk.quarantines:
        return ()
    kept = _kept_fragments(torn_path(log))
    notes = []
    for line, entry in walk.quarantines:
        where = (
            f"kept in `{torn_path(log).name}`"
            if entry.get("sha256") in kept
            else f"NOT found in `{torn_path(log).name}` (its sha256 is {entry.get('sha256')})"
        )
        notes.append(
            f"line {line}: a torn write of {entry.get('length')} bytes at offset "
            f"{entry.get('offset')} was cut off by the next append; it is {where}"
        )
    return tuple(notes)


def _kept_fragments(path: Path) -> set[str]:
    """The sha256 of every fragment in the quarantine file, computed from its bytes."""
    digests: set[str] = set()
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return digests
    for line in lines:
        try:
            record = json.loads(line)
            fragment = record["fragment"].encode("utf-8", "surrogateescape")
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        digests.add(hashlib.sha256(fragment).hexdigest())
    return digests
