"""Requests as the engine sees them: the ticket a submission returns and the events its
sink receives (tokens while streaming, then exactly one of Finished, Classified, Failed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fmlang.backends.serve.sampling import Sampling


@dataclass(frozen=True)
class Token:
    token_id: int
    text: str  # the new text this token completes ("" when not streaming)


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (end-of-sequence token) or "length" (max_new_tokens)
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    tail: str  # text a streaming client has not received yet
    first_token_s: float  # seconds from submission to the first generated token


@dataclass(frozen=True)
class Classified:
    probabilities: tuple[tuple[float, ...], ...]  # one row per input


@dataclass(frozen=True)
class Failed:
    message: str


Event = Token | Finished | Classified | Failed
Sink = Callable[[Event], None]


class QueueFull(RuntimeError):
    """The waiting queue is at its bound; retry after `retry_after` seconds."""

    def __init__(self, size: int, retry_after: float) -> None:
        super().__init__(f"the request queue is full ({size} waiting)")
        self.retry_after = retry_after


@dataclass(eq=False)
class Ticket:
    """One submitted request. `cancel()` drops it wherever it is."""

    adapter: str | None
    sink: Sink
    prompt_ids: tuple[int, ...] = ()
    texts: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=lambda: Sampling(max_new_tokens=16))
    stream: bool = False
    number: int = 0
    skips: int = 0  # times the scheduler passed it over for want of an adapter slot
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    pinned: bool = False  # holds a use of its adapter's device slot (engine thread only)
    answered: bool = False  # its last event (Finished, Classified or Failed) went out

    def cancel(self) -> None:
        self.cancelled.set()


def emit(ticket: Ticket, event: Event) -> None:
    """Deliver an event (none after the last); a sink that fails (its client is gone)
    never stops the engine."""
    if ticket.answered:
        return
    ticket.answered = not isinstance(event, Token)
    try:
        ticket.sink(event)
    except Exception:  # the request is abandoned; the others go on
        ticket.cancel()
