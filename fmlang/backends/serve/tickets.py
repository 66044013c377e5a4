"""Requests as the engine sees them: the ticket a submission returns and the events its
sink receives (tokens while streaming, then exactly one of Finished, Classified, Failed).
A streamed token's text is held back while it may still turn into a stop string, and its
log-probabilities travel with the text they belong to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fmlang.backends.serve.sampling import Sampling


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, as the API reports it."""

    token: str  # the token's own text (its bytes escaped when it holds part of a character)
    logprob: float
    top: tuple[tuple[str, float, bytes], ...]  # the most likely there, most likely first
    offset: int  # characters of the completion's text before this token
    raw: bytes = b""  # the token's bytes (UTF-8, or part of a character's)


@dataclass(frozen=True)
class Token:
    token_id: int
    text: str  # the new text this token completes ("" when not streaming or held back)
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens whose text `text` carries


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (end-of-sequence token or stop string) or "length" (max_new_tokens)
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    tail: str  # text a streaming client has not received yet
    first_token_s: float  # seconds from submission to the first generated token
    logprobs: tuple[TokenLogprob, ...] = ()  # every generated token's, when asked for
    tail_logprobs: tuple[TokenLogprob, ...] = ()  # those a streaming client has not received


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


@dataclass(frozen=True)
class Mixture:
    """A weighted mixture of adapters for one request: its rows add Σ w · (that adapter's
    delta), computed in the same batched pass as plain adapter rows (`lora`)."""

    parts: tuple[tuple[str, float], ...]  # (adapter, weight), distinct adapters

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)

    def check(self, task: str, replaces_layers: Mapping[str, bool], slots: int) -> None:
        """Raise ValueError unless an engine can run the mixture: known LoRA adapters
        (`replaces_layers`: each adapter's name → whether it replaces whole layers, which
        cannot be mixed), generation, no more adapters than `slots` device slots."""
        names = self.names
        if not names or len(set(names)) != len(names):
            raise ValueError("a mixture names one or more distinct adapters")
        unknown = [name for name in names if name not in replaces_layers]
        if unknown:
            raise ValueError(f"unknown adapter `{unknown[0]}` in the mixture")
        if task != "generate":
            raise ValueError("adapter mixtures are for generation only")
        heads = [name for name in names if replaces_layers[name]]
        if heads:
            raise ValueError(f"adapter `{heads[0]}` replaces whole layers and cannot be mixed")
        if len(names) > slots:
            raise ValueError(
                f"a mixture of {len(names)} adapters needs more than the {slots} device slots"
            )


@dataclass(eq=False)
class Ticket:
    """One submitted request. `cancel()` drops it wherever it is."""

    adapter: str | Mixture | None  # None: the base model
    sink: Sink
    prompt_ids: tuple[int, ...] = ()
    texts: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=lambda: Sampling(max_new_tokens=16))
    stream: bool = False
    number: int = 0
    skips: int = 0  # times the scheduler admitted a younger request while this one waited
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    pinned: bool = False  # holds a use of its adapter's device slot (engine thread only)
    answered: bool = False  # its last event (Finished, Classified or Failed) went out
    on_cancel: Callable[[], None] | None = None  # tells an engine in another process

    def cancel(self) -> None:
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()

    @property
    def adapters(self) -> tuple[str, ...]:
        """The adapters whose device slots the request pins while it runs."""
        if isinstance(self.adapter, Mixture):
            return self.adapter.names
        return () if self.adapter is None else (self.adapter,)

    def weights(self, slots: list[int]) -> tuple[tuple[int, float], ...]:
        """The row's (slot, weight) pairs for `slots`, the pinned slots of `adapters`."""
        if isinstance(self.adapter, Mixture):
            return tuple((s, w) for s, (_, w) in zip(slots, self.adapter.parts, strict=True))
        return tuple((s, 1.0) for s in slots)


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


def generation_ticket(
    adapter: str | Mixture | None,
    prompt_ids: Sequence[int],
    sampling: Sampling,
    sink: Sink,
    stream: bool,
    check_mixture: Callable[[Mixture], None],
) -> Ticket:
    """A generation's ticket, after the checks every engine makes at submission (ValueError:
    an empty prompt, or a mixture `check_mixture` refuses)."""
    if not prompt_ids:
        raise ValueError("the prompt has no tokens")
    if isinstance(adapter, Mixture):
        check_mixture(adapter)
    return Ticket(adapter, sink, tuple(prompt_ids), (), sampling, stream)


def classification_ticket(
    adapter: str | None, texts: Sequence[str], sink: Sink, max_batch: int
) -> Ticket:
    """A classification's ticket: 1 to `max_batch` inputs, else ValueError."""
    if not texts or len(texts) > max_batch:
        raise ValueError(f"classify between 1 and {max_batch} inputs at a time")
    return Ticket(adapter, sink, texts=tuple(texts))
