"""The engine-to-event-loop handoff: every item arrives, in order per queue, and a burst of
posts (one engine iteration answering many rows) costs about one wake-up of the loop."""

from __future__ import annotations

import asyncio
import threading

from fmlang.backends.serve.handoff import Mailbox, mailbox

ROWS, STEPS = 16, 200


def test_every_item_arrives_in_order_with_one_wakeup_per_burst() -> None:
    async def run() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        box = Mailbox(loop)
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(ROWS)]
        step_done = threading.Event()

        def engine() -> None:
            for step in range(STEPS):
                for queue in queues:  # one iteration: every row's event
                    box.post(queue, step)
                step_done.wait(5)  # the next forward pass starts once the loop has drained
                step_done.clear()

        async def reader(queue: asyncio.Queue[int], last: bool) -> list[int]:
            got = []
            for _ in range(STEPS):
                got.append(await queue.get())
                if last:
                    step_done.set()
            return got

        thread = threading.Thread(target=engine)
        thread.start()
        received = await asyncio.gather(*[reader(q, i == ROWS - 1) for i, q in enumerate(queues)])
        thread.join()
        return list(received), box.wakeups

    received, wakeups = asyncio.run(run())
    assert received == [list(range(STEPS))] * ROWS
    assert STEPS <= wakeups <= 2 * STEPS  # about one per iteration, not ROWS per iteration


def test_concurrent_posters_lose_nothing() -> None:
    async def run() -> list[int]:
        box = Mailbox(asyncio.get_running_loop())
        queue: asyncio.Queue[int] = asyncio.Queue()

        def poster(offset: int) -> None:
            for value in range(offset, offset + 5000):
                box.post(queue, value)

        threads = [threading.Thread(target=poster, args=(k * 5000,)) for k in range(4)]
        for thread in threads:
            thread.start()
        got = [await queue.get() for _ in range(20000)]
        for thread in threads:
            thread.join()
        return got

    assert sorted(asyncio.run(run())) == list(range(20000))


def test_one_mailbox_per_loop() -> None:
    async def both() -> tuple[Mailbox, Mailbox]:
        loop = asyncio.get_running_loop()
        return mailbox(loop), mailbox(loop)

    first, second = asyncio.run(both())
    assert first is second
    third, _ = asyncio.run(both())
    assert third is not first
