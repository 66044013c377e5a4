"""The diagnostics of the audit log, shared by the writer (which refuses to append to a log
that does not match its head) and by `fmc audit verify` (which reports every problem).

Each points at a line of the log or of its head, says what is wrong, and how to go on.
"""

from __future__ import annotations

from pathlib import Path

from fmlang.backends.data.audit_chain import KEY_ENV, Head, head_path, span_at, torn_path
from fmlang.diagnostics import Diagnostic, error, warning


def writer_help(log: Path) -> str:
    """What to do when an append is refused: data is read only once its access is logged."""
    return (
        f"run `fmc audit verify {log}` to see every problem; no data is read until the access "
        f"can be logged: keep `{log.name}` and `{head_path(log).name}` as evidence and move "
        "both aside to start a new log"
    )


def evidence_help(log: Path) -> str:
    return (
        f"the log cannot be trusted from here on: keep `{log.name}` and "
        f"`{head_path(log).name}` as evidence, compare them with a backup, and move both aside "
        "to start a new log"
    )


def tampered(log: Path, line: int, reason: str, help: str, verified: int) -> Diagnostic:
    return error(
        "FM0707",
        f"the audit log was tampered with: entry on line {line} {reason}",
        span_at(log, line),
        "first line that does not verify",
        help=help,
        notes=(f"the {verified} entries before it verify",),
    )


def truncated(log: Path, held: int, head: Head, help: str) -> Diagnostic:
    first, last = held + 1, head.entries
    missing = (
        f"entry {last} is missing" if first == last else f"entries {first} to {last} are missing"
    )
    return error(
        "FM0711",
        f"the audit log was truncated: `{head_path(log).name}` records {head.entries} entries "
        f"(the last with hash {head.hash[:16]}), the log holds {held}",
        span_at(log, first),
        missing,
        help=help,
    )


def deleted(log: Path, head: Head, refusing: bool) -> Diagnostic:
    then = "no data is read until the access can be logged: " if refusing else ""
    return error(
        "FM0712",
        f"the audit log `{log}` is missing, but its head records {head.entries} entries "
        f"(the last with hash {head.hash[:16]})",
        span_at(head_path(log), 1),
        "the head of a log that was deleted",
        help=f"{then}restore `{log.name}` from a backup, or keep `{head_path(log).name}` as "
        "evidence and move it aside to start a new log",
    )


def past_head(log: Path, line: int, what: str, head: Head | None, help: str) -> Diagnostic:
    recorded = f"{head.entries} entries" if head else "no entries"
    return error(
        "FM0713",
        f"the audit log continues past its head: {what}",
        span_at(log, line),
        f"`{head_path(log).name}` records {recorded}",
        help=help,
    )


def head_missing(log: Path, entries: int, help: str) -> Diagnostic:
    return error(
        "FM0714",
        f"the audit log has {entries} entries but no head `{head_path(log).name}`: it was "
        "deleted (or the log was written by an fmc that kept no head), so a truncation of the "
        "log cannot be ruled out",
        span_at(log, 1),
        help=help,
    )


def head_invalid(log: Path, reason: str, help: str) -> Diagnostic:
    return error(
        "FM0714",
        f"the audit head `{head_path(log).name}` {reason}: fmc replaces it atomically, so it "
        "was written by something else",
        span_at(head_path(log), 1),
        help=help,
    )


def bad_signature(path: Path, line: int, what: str, reason: str, help: str) -> Diagnostic:
    return error("FM0715", f"{what} {reason}", span_at(path, line), "signature", help=help)


def key_not_set(log: Path, key_id: str, verifying: bool) -> Diagnostic:
    doing = "its signatures cannot be checked" if verifying else "refusing to append unsigned"
    return error(
        "FM0716",
        f"the audit log `{log}` is signed with the key {key_id}, but {KEY_ENV} is not set: {doing}",
        span_at(head_path(log), 1),
        help=f"set {KEY_ENV} to the key that signs this log",
    )


def key_unexpected(log: Path, head: Head, key_id: str) -> Diagnostic:
    started = f"with the key {head.key_id}" if head.key_id else "unsigned"
    return error(
        "FM0716",
        f"the audit log `{log}` was started {started}; {KEY_ENV} holds the key {key_id}: "
        "refusing to mix entries of two signing modes in one log",
        span_at(head_path(log), 1),
        help=f"set {KEY_ENV} to the log's key (or unset it for an unsigned log), or move "
        f"`{log.name}` and `{head_path(log).name}` aside to start a new log with this key",
    )


def interrupted(log: Path, line: int, what: str) -> Diagnostic:
    """Not tampering: a crash or a full disk stopped an append part-way."""
    return warning(
        "FM0717",
        f"an append to the audit log was interrupted: {what}",
        span_at(log, line),
        help="nothing to do: the next `fmc run` completes the append (a torn line is moved to "
        f"`{torn_path(log).name}` and an entry records that)",
    )


def cannot_write(log: Path, exc: OSError) -> Diagnostic:
    return error(
        "FM0718",
        f"cannot write the audit log `{log}`: {exc.strerror or exc}",
        span_at(log, 1) if log.exists() else None,
        help="free disk space or fix the folder's permissions; no data is read until its "
        "access is logged, and an append cut short is completed by the next run",
    )


def cannot_read(log: Path, exc: OSError | str) -> Diagnostic:
    reason = exc if isinstance(exc, str) else exc.strerror or str(exc)
    return error(
        "FM0708",
        f"cannot read the audit log `{log}`: {reason}",
        help="pass the log's path (`fmc audit verify LOG`), set FMC_AUDIT_LOG, or run in the "
        "folder that holds `.fm-build/`",
    )
