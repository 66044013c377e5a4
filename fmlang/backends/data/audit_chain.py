"""The audit log's format: entries, their hashes and MACs, the signing key, and the head.

An entry is one JSON object on one line: the access record's fields plus `seq` (1, 2, …),
`time` (the writer's clock), `prev` (the previous entry's hash; GENESIS for the first) and
`hash`, the sha256 of the entry's canonical JSON without `hash` and `mac`. A signed log adds
`key_id` (inside what is hashed) and `mac`, the HMAC-SHA256 of the same canonical JSON under
the key in FMC_AUDIT_KEY; the key never comes from a spec and is never written anywhere.

The head (`LOG.head`, beside the log) says how far the log has been written: the entry count,
the hash of the last entry, and the entries an append in progress is about to write
(`pending`), so that a crash between writing the log and replacing the head is told apart
from a truncated or extended log. A signed head carries its own MAC. The head is replaced
atomically (a temporary file, fsync, rename, fsync of the folder).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlang.diagnostics import Span, error
from fmlang.errors import StageError

GENESIS = "0" * 64
KEY_ENV = "FMC_AUDIT_KEY"
MIN_KEY_BYTES = 16
HEAD_FORMAT = 1
QUARANTINE_EVENT = "torn-line-quarantined"  # the `event` of an entry that records a torn line
Entry = dict[str, Any]


@dataclass(frozen=True)
class AuditKey:
    """The HMAC key; only its fingerprint (`id`) is ever shown or stored."""

    secret: bytes = field(repr=False)

    @property
    def id(self) -> str:
        digest = hashlib.sha256(b"fmc-audit-key-id\0" + self.secret).hexdigest()
        return f"sha256:{digest[:16]}"

    def mac(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()

    def verifies(self, body: bytes, mac: object) -> bool:
        return isinstance(mac, str) and hmac.compare_digest(self.mac(body), mac)


def signing_key(environ: Mapping[str, str] = os.environ) -> AuditKey | None:
    """The key in FMC_AUDIT_KEY (its UTF-8 bytes), or None when it is unset or empty."""
    text = environ.get(KEY_ENV, "")
    if not text:
        return None
    secret = text.encode("utf-8")
    if len(secret) < MIN_KEY_BYTES:
        raise StageError(
            error(
                "FM0716",
                f"{KEY_ENV} is {len(secret)} bytes long; an audit key needs at least "
                f"{MIN_KEY_BYTES}",
                help=f"set {KEY_ENV} to a long random secret, for example the output of "
                "`openssl rand -hex 32`",
            )
        )
    return AuditKey(secret)


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".head")


def torn_path(log: Path) -> Path:
    """Where the next append moves a torn (incomplete) last line."""
    return log.with_name(log.name + ".torn")


def lock_path(log: Path) -> Path:
    return log.with_name(log.name + ".lock")


def compact(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one byte form of a JSON document to hash or sign."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes of an entry that are hashed and signed: all but its `hash` and `mac`."""
    return compact({k: v for k, v in entry.items() if k not in ("hash", "mac")})


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def seal(body: Entry, key: AuditKey | None) -> Entry:
    """`body` (seq, prev and the rest already set) with its key_id, hash and MAC."""
    entry = {k: v for k, v in body.items() if k not in ("key_id", "hash", "mac")}
    if key is not None:
        entry["key_id"] = key.id
    entry["hash"] = entry_hash(entry)
    if key is not None:
        entry["mac"] = key.mac(canonical(entry))
    return entry


def line_bytes(entry: Entry) -> bytes:
    """An entry as the log stores it: one line of JSON, ending in a newline."""
    return (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def signature_problem(key_id: object, mac: object, body: bytes, key: AuditKey) -> str | None:
    """Why something (an entry or the head) with this key_id and MAC over `body` is not
    signed by `key`, or None when it is."""
    if key_id is None or mac is None:
        return f"is not signed (with {key.id} set, every entry and the head must be)"
    if key_id != key.id:
        return f"is signed with another key ({key_id}), not {key.id}"
    if not key.verifies(body, mac):
        return f"has a MAC that does not verify under {key.id}: it was written without the key"
    return None


def entry_signature_problem(entry: Mapping[str, Any], key: AuditKey) -> str | None:
    return signature_problem(entry.get("key_id"), entry.get("mac"), canonical(entry), key)


class BadHead(ValueError):
    """The head file is not a head this module wrote."""


@dataclass(frozen=True)
class Head:
    entries: int
    hash: str
    pending: tuple[Entry, ...] = ()
    key_id: str | None = None
    mac: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "entries": self.entries,
            "hash": self.hash,
            "pending": list(self.pending),
            "key_id": self.key_id,
        }

    def signature_problem(self, key: AuditKey) -> str | None:
        return signature_problem(self.key_id, self.mac, compact(self.body()), key)

    @classmethod
    def parse(cls, text: str) -> Head:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadHead(f"is not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != HEAD_FORMAT:
            raise BadHead(f"is not an audit head (format {HEAD_FORMAT})")
        entries, last, pending = data.get("entries"), data.get("hash"), data.get("pending")
        if not (isinstance(entries, int) and entries >= 0 and isinstance(last, str)):
            raise BadHead("lacks a valid `entries` count or `hash`")
        if not (isinstance(pending, list) and all(_is_entry(p) for p in pending)):
            raise BadHead("lacks a valid `pending` list")
        return cls(entries, last, tuple(pending), data.get("key_id"), data.get("mac"))


def _is_entry(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("seq"), int)
        and isinstance(value.get("hash"), str)
    )


def read_head(log: Path) -> Head | None:
    """The head beside `log`, or None when there is none. Raises BadHead or OSError."""
    try:
        text = head_path(log).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise BadHead("is not UTF-8 text") from None
    return Head.parse(text)


def write_head(log: Path, entries: int, last: str, pending: tuple[Entry, ...],
               key: AuditKey | None) -> None:  # fmt: skip
    """Replace the head atomically and durably: after this returns, a crash leaves it."""
    head = Head(entries, last, pending, key.id if key else None)
    mac = key.mac(compact(head.body())) if key else None
    text = json.dumps({**head.body(), "mac": mac}, indent=2, sort_keys=True) + "\n"
    path = head_path(log)
    tmp = path.with_name(f".{path.name}.tmp")  # one writer at a time: the caller holds the lock
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a file created or renamed in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def span_at(path: Path, line: int, width: int = 1) -> Span:
    """Line `line` of `path` (the log or its head), for a diagnostic's location."""
    return Span(str(path), line, 1, line, 1 + max(width, 1))
