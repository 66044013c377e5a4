"""`fmc serve`'s audit log writer: every access decision appended to the same hash-chained
log the run stages write (fmlang/backends/data/audit.py), from a thread of its own, so the
event loop never waits on a disk.

Records are queued in decision order and written by one thread in batches (group commit):
whatever has queued while the previous batch was being written goes in the next append,
one lock, one head update and one fsync for the whole batch, to every log in turn. A
denial flood therefore costs one queue insertion per request on the event loop, and the
writer's throughput grows with the backlog instead of falling behind it.

- `record` queues an entry and returns at once (refusals: a refusal grants nothing, so it
  need not wait for the disk).
- `submit` queues an entry and returns a future that completes once it is on disk in every
  log (`durable` waits for it): an allowed request's answer is held until then, so no
  answer leaves without its record, while the model already works on it.
- When an append fails, the writer stops: every later `durable` raises, and the server
  answers 503 (fail closed) until it is restarted with a writable log.
- A backlog above MAX_BACKLOG entries refuses new requests with 503 instead of growing
  without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.atomic import make_private
from fmlang.backends.data import audit
from fmlang.backends.data.audit_chain import AuditKey, head_path, lock_path, torn_path
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

MAX_BATCH = 4096  # entries per append
MAX_BACKLOG = 65536  # queued entries before new requests are refused


@dataclass
class _Pending:
    record: dict[str, Any]
    done: asyncio.Future[None] | None = None


class AuditUnavailable(Exception):
    """The log cannot take more entries (a failed append, or too long a backlog)."""


class AuditWriter:
    """Appends records to `logs` (the first is the primary; the others get copies) from a
    background thread, signed with `key` when one is set (FMC_AUDIT_KEY)."""

    def __init__(self, logs: Sequence[Path], key: AuditKey | None) -> None:
        self.logs, self.key = tuple(logs), key
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.failure: Diagnostic | None = None
        self.written = 0

    def start(self, first: dict[str, Any]) -> None:
        """Append `first` (the server's start) synchronously, then start the writer. Raises
        StageError (FM1076) when a log cannot be written: the server must not start."""
        try:
            for log in self.logs:
                audit.append_many(log, [first], self.key)
                for part in (log, head_path(log), torn_path(log), lock_path(log)):
                    make_private(part)
        except StageError as exc:
            raise StageError(cannot_write(self.logs, exc.diagnostics[0])) from None
        self.written = 1
        self._thread = threading.Thread(target=self._run, name="fmc-serve-audit", daemon=True)
        self._thread.start()

    def record(self, record: dict[str, Any]) -> None:
        """Queue `record`; it is written in order, without waiting."""
        self.check()
        self._queue.put(_Pending(record))

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue `record`; the future completes once every log holds it (AuditUnavailable
        when one cannot take it). Call from the event loop."""
        self.check()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put(_Pending(record, done))
        return done

    async def durable(self, record: dict[str, Any]) -> None:
        """Queue `record` and wait until every log holds it; AuditUnavailable otherwise."""
        await self.submit(record)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def check(self) -> None:
        """AuditUnavailable when the log cannot take an entry now."""
        if self.failure is not None:
            raise AuditUnavailable(f"the audit log cannot be written: {self.failure.message}")
        if self._queue.qsize() > MAX_BACKLOG:
            raise AuditUnavailable("the audit log is behind; try again shortly")

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Pending] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        problem: Exception | None = None
        if self.failure is None:
            records = [p.record for p in batch]
            try:
                for log in self.logs:
                    audit.append_many(log, records, self.key)
                self.written += len(records)
            except StageError as exc:
                self.failure = exc.diagnostics[0]
            except Exception as exc:  # never lose the thread silently
                self.failure = error("FM1076", f"cannot append to the audit log: {exc}")
        if self.failure is not None:
            problem = AuditUnavailable(f"the audit log cannot be written: {self.failure.message}")
        for pending in batch:
            if pending.done is not None:
                _settle(pending.done, problem)


def _settle(future: asyncio.Future[None], problem: Exception | None) -> None:
    loop = future.get_loop()

    def settle() -> None:
        if future.done():
            return
        if problem is None:
            future.set_result(None)
        else:
            future.set_exception(problem)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(settle)


def cannot_write(logs: Sequence[Path], cause: Diagnostic) -> Diagnostic:
    return error(
        "FM1076",
        f"cannot write the serving audit log: {cause.message}",
        help="make the log writable (in a container, --audit-log PATH on a writable volume), "
        "or repair it (`fmc audit verify LOG`)",
        notes=(f"logs: {', '.join(str(log) for log in logs)}", *cause.notes),
    )
