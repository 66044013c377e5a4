"""When documents are checked and verified, and which results get published.

Two lanes per document, each "latest version wins":

1. the checker (parse, names, types, units; tens of milliseconds on a 5,000-line spec,
   since only the edited top-level items are reparsed) in one worker thread;
2. `fmlang.api.analyze`, which adds the Z3 verifier's diagnostics, in a worker process
   (`verifier.py`), started once the checker finds no errors: analyze verifies only then.

Debounce. An edit that follows a quiet spell is checked at once: waiting would only add
latency, and an edit to a 5,000-line spec is checked in well under the 300 ms budget. Edits
that come in a burst (less than `debounce` apart, or while the previous check was running:
typing, a paste, an undo group) wait until `debounce` passes without another, and then only
the newest version is checked. 100 ms is under the gap between keystrokes of steady typing,
so results still follow the typist, and far enough under the budget to leave room for the
check itself. Results for a version that is no longer current are never published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from fmlang.lsp.documents import Checker, Snapshot
from fmlang.lsp.verifier import Verifier, decode

DEBOUNCE_SECONDS = 0.1
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Latest:
    text: str
    version: int | None
    changed_at: float
    previous_change_at: float


class Scheduler:
    def __init__(
        self,
        publish: Callable[[Snapshot], None],
        encoding: Callable[[], str],
        debounce: float = DEBOUNCE_SECONDS,
        verify: bool = True,
    ) -> None:
        self.publish = publish
        self.encoding = encoding
        self.debounce = debounce
        self.checker = Checker()
        self.verifier = Verifier() if verify else None
        self.snapshots: dict[str, Snapshot] = {}  # the newest checked version of each document
        self.parsed: dict[str, Snapshot] = {}  # the newest version that parsed
        self._latest: dict[str, Latest] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._verifying: set[str] = set()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmc-check")

    # ---- documents -----------------------------------------------------------------

    def changed(self, uri: str, text: str, version: int | None) -> None:
        now = time.monotonic()
        before = self._latest.get(uri)
        self._latest[uri] = Latest(text, version, now, before.changed_at if before else 0.0)
        wake = self._wake.setdefault(uri, asyncio.Event())
        wake.set()
        if uri not in self._tasks:
            self._tasks[uri] = asyncio.get_running_loop().create_task(self._pump(uri, wake))

    def closed(self, uri: str) -> None:
        task = self._tasks.pop(uri, None)
        if task is not None:
            task.cancel()
        self._latest.pop(uri, None)
        self._wake.pop(uri, None)
        self.snapshots.pop(uri, None)
        self.parsed.pop(uri, None)
        self.checker.forget(uri)

    def is_current(self, snapshot: Snapshot) -> bool:
        latest = self._latest.get(snapshot.uri)
        return (
            latest is not None
            and latest.version == snapshot.version
            and latest.text == snapshot.text
        )

    async def current(self, uri: str) -> Snapshot | None:
        """A snapshot of the document as it is now, checking it if the newest is stale."""
        latest = self._latest.get(uri)
        if latest is None:
            return None
        snapshot = self.snapshots.get(uri)
        if snapshot is not None and self.is_current(snapshot):
            return snapshot
        return await self._check(uri, latest)

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` on the checker's thread (it owns the parse caches)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def shutdown(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self.verifier is not None:
            self.verifier.shutdown()

    # ---- the checker's lane --------------------------------------------------------

    async def _pump(self, uri: str, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            await self._settle(uri, wake)
            snapshot = await self.current(uri)
            if snapshot is not None and self.is_current(snapshot):
                self.publish(snapshot)
                self._verify_soon(snapshot)

    async def _settle(self, uri: str, wake: asyncio.Event) -> None:
        """Return at once after a quiet spell; in a burst, once `debounce` passes quietly."""
        latest = self._latest[uri]
        burst = latest.changed_at - latest.previous_change_at < self.debounce
        wake.clear()
        while burst:
            await asyncio.sleep(self.debounce)
            burst = wake.is_set()
            wake.clear()

    async def _check(self, uri: str, latest: Latest) -> Snapshot:
        encoding = self.encoding()
        snapshot = await self.run(
            lambda: self.checker.check(uri, latest.text, latest.version, encoding)
        )
        newest = self.snapshots.get(uri)
        if newest is not None and self.is_current(newest):
            return newest  # another check of this version finished first: share its results
        self.snapshots[uri] = snapshot
        if snapshot.module is not None:
            self.parsed[uri] = snapshot
        return snapshot

    # ---- the verifier's lane -------------------------------------------------------

    def _verify_soon(self, snapshot: Snapshot) -> None:
        busy = snapshot.uri in self._verifying
        if self.verifier is None or not snapshot.result.ok or snapshot.verified or busy:
            return
        self._verifying.add(snapshot.uri)
        future = self.verifier.submit(snapshot.text, snapshot.file, snapshot.base)
        wrapped = asyncio.wrap_future(future)
        wrapped.add_done_callback(lambda done: self._verified(snapshot, done))

    def _verified(self, snapshot: Snapshot, done: asyncio.Future[Any]) -> None:
        self._verifying.discard(snapshot.uri)
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            log.warning("verification failed: %r", error)
            if self.verifier is not None:
                self.verifier.shutdown()  # a dead worker is replaced on the next submit
            return
        if self.is_current(snapshot):
            snapshot.verified = decode(done.result())
            self.publish(snapshot)
            return
        newest = self.snapshots.get(snapshot.uri)
        if newest is not None and self.is_current(newest) and newest.verified is None:
            self._verify_soon(newest)  # the document changed meanwhile: verify the newest
