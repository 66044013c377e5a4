"""Events from the engine thread to the event loop, with few wake-ups.

The engine calls each request's sink on its own thread, once per streamed token and once
at the end; handing each event over with its own `loop.call_soon_threadsafe` writes to the
loop's wake-up pipe and makes the loop thread contend for the GIL once per event. A
`Mailbox` (one per event loop) coalesces them: the engine thread appends `(queue, item)`
to a deque, and only the first append since the loop last drained schedules a drain, so an
engine iteration that answers many rows costs the loop about one wake-up, not one per row.

Lock-free by ordering: `post` appends before it reads `scheduled`, `drain` clears
`scheduled` before it empties the deque, and both deque operations are atomic. An item
appended while a drain is scheduled is taken by that drain; one appended after the drain
cleared the flag schedules another (at worst a drain that finds nothing).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any

_MAILBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = (
    weakref.WeakKeyDictionary()
)


class Mailbox:
    """Items for asyncio queues of one event loop, posted from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: deque[tuple[asyncio.Queue[Any], Any]] = deque()
        self.scheduled = False
        self.wakeups = 0  # drains scheduled (tests and benchmarks read it)

    def post(self, queue: asyncio.Queue[Any], item: Any) -> None:
        """Deliver `item` to `queue` on the loop (any thread; never blocks)."""
        self.pending.append((queue, item))
        if not self.scheduled:
            self.scheduled = True
            self.wakeups += 1
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                self.pending.clear()

    def drain(self) -> None:
        """Put every pending item on its queue (on the loop's thread)."""
        self.scheduled = False
        pending = self.pending
        while pending:
            queue, item = pending.popleft()
            queue.put_nowait(item)


def mailbox(loop: asyncio.AbstractEventLoop) -> Mailbox:
    """The mailbox of `loop` (made on first use; called on the loop's thread)."""
    found = _MAILBOXES.get(loop)
    if found is None:
        found = _MAILBOXES[loop] = Mailbox(loop)
    return found
