"""The engine in its own process, so the model's Python and the server's HTTP work do not
take turns on one GIL.

With both in one process, a small model's engine thread (all interpreter overhead) and the
event loop contend for the interpreter: on 2 cores `benchmarks/serve_load.py --repeats 3`
answered 76%-84% of the engine-alone rate through HTTP with the engine on a thread, 87%-97%
with it in its own process. `EngineProcess` offers the server the
`Engine` surface it uses (`Served`) while the engine runs in a spawned child:

- the server submits over a pipe (`("generate" | "classify", number, …)`, `("cancel",
  number)`, `("stop",)`); the child sends one message per engine iteration with every
  event that iteration produced and a snapshot of the gauges and counters `/metrics`
  shows, read on the server's side by one receiving thread that calls each request's sink;
- what must answer at once stays in the server's process: the queue bound (`QueueFull` is
  decided from the requests in flight less the rows the child last reported running, so
  the server never refuses what the child would take), mixture checks, tokenizing;
- the child ignores SIGINT (the server stops it, failing what is still queued, as
  `Engine.stop` does), exits when the server's end of the pipe closes, and a child that
  dies fails every request in flight and makes `/health` answer 503.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from transformers import PreTrainedTokenizerBase

from fmlang.backends.serve.cache import CacheActivity, TierStats
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Engine, SchedulerStats
from fmlang.backends.serve.loading import load_tokenizer
from fmlang.backends.serve.runtime import build_engine
from fmlang.backends.serve.sampling import Sampling
from fmlang.backends.serve.surface import Served
from fmlang.backends.serve.tickets import (
    Event,
    Failed,
    Mixture,
    QueueFull,
    Sink,
    Ticket,
    Token,
    classification_ticket,
    emit,
    generation_ticket,
)
from fmlang.diagnostics import error
from fmlang.errors import StageError

START_TIMEOUT_S = 600.0  # loading a large base model from disk takes a while
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Info:
    """What the child tells the server once the engine is loaded."""

    vocab_size: int
    max_positions: int
    untrained_heads: frozenset[str]
    replaces_layers: dict[str, bool]
    slots: int


@dataclass(frozen=True)
class _Snapshot:
    """The engine's gauges and counters after an iteration."""

    running: int = 0
    generated: int = 0  # tokens generated so far
    stats: dict[str, TierStats] = field(default_factory=dict)
    activity: CacheActivity = field(default_factory=lambda: CacheActivity(0, 0, 0.0, 0.0))
    scheduler: SchedulerStats = field(default_factory=SchedulerStats)


def start_engine(config: ServeConfig) -> Served:
    """The engine `config` asks for, loaded and not yet started: in its own process
    (`engine_process`, the default) or in this one. Raises StageError when it cannot load."""
    if not config.engine_process:
        return build_engine(config)
    return EngineProcess.spawn(config)


class EngineProcess:
    """The server's handle on an engine running in a child process."""

    def __init__(
        self,
        config: ServeConfig,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        info: _Info,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        self.process, self.conn = process, conn
        self.tokenizer = tokenizer
        self.vocab_size, self.max_positions = info.vocab_size, info.max_positions
        self.untrained_heads = info.untrained_heads
        self.info = info
        self.on_batch: Callable[[int], None] | None = None
        self.max_queue, self.task, self.max_batch = config.max_queue, config.task, config.max_batch
        self.tokenizer_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # `_flight`, `_numbers`, `_dead`
        self._flight: dict[int, Ticket] = {}
        self._numbers = 0
        self._snapshot = _Snapshot()
        self._dead: str | None = None  # why the child is gone
        self._stopping = False
        self._receiver = threading.Thread(
            target=self._receive, name="fmc-serve-engine-events", daemon=True
        )

    @classmethod
    def spawn(cls, config: ServeConfig) -> EngineProcess:
        """Start the child, wait until its engine is loaded (StageError if it cannot be)."""
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        ours, theirs = context.Pipe()
        threads = _torch_threads()
        process = context.Process(
            target=child_main,
            args=(theirs, config.model_dump_json(), threads),
            name="fmc-serve-engine",
            daemon=True,
        )
        process.start()
        theirs.close()
        try:
            if not ours.poll(START_TIMEOUT_S):
                raise _start_failure(config, "it did not finish loading in time")
            kind, payload = ours.recv()
        except (EOFError, OSError) as exc:
            process.join(timeout=5)
            reason = f"it exited with code {process.exitcode}" if process.exitcode else str(exc)
            raise _start_failure(config, reason) from exc
        except StageError:
            process.kill()
            raise
        if kind == "failed":
            process.join(timeout=STOP_TIMEOUT_S)
            if isinstance(payload, list):
                raise StageError(*payload)
            raise _start_failure(config, payload)
        return cls(config, process, ours, payload, load_tokenizer(config))

    # ---- the Engine surface ----------------------------------------------------------

    def start(self) -> None:
        self._receiver.start()

    def stop(self) -> None:
        """Stop the child's engine: requests still waiting or running get `Failed`, as with
        `Engine.stop`; the child then exits (killed if it does not within 30 s)."""
        with self._lock:
            self._stopping = True
        with contextlib.suppress(OSError, ValueError):  # already gone
            self._send(("stop",))
        if self._receiver.is_alive():
            self._receiver.join(timeout=STOP_TIMEOUT_S)
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._fail_all("the server is shutting down")
        self.conn.close()

    def alive(self) -> bool:
        return self._dead is None

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        with self.tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

    def queue_depth(self) -> int:
        return max(0, len(self._flight) - self._snapshot.running)

    def running(self) -> int:
        return self._snapshot.running

    @property
    def tokens_generated(self) -> int:
        return self._snapshot.generated

    def check_mixture(self, mixture: Mixture) -> None:
        mixture.check(self.task, self.info.replaces_layers, self.info.slots)

    def cache_stats(self) -> dict[str, TierStats]:
        return self._snapshot.stats

    def cache_activity(self) -> CacheActivity:
        return self._snapshot.activity

    def scheduler_stats(self) -> SchedulerStats:
        return self._snapshot.scheduler

    def submit_generate(
        self,
        adapter: str | Mixture | None,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        sink: Sink,
        *,
        stream: bool = False,
    ) -> Ticket:
        """Queue a generation in the child; raises QueueFull when the queue is at its bound."""
        ticket = generation_ticket(adapter, prompt_ids, sampling, sink, stream, self.check_mixture)
        return self._enqueue(ticket, ("generate", adapter, ticket.prompt_ids, sampling, stream))

    def submit_classify(self, adapter: str | None, texts: Sequence[str], sink: Sink) -> Ticket:
        ticket = classification_ticket(adapter, texts, sink, self.max_batch)
        return self._enqueue(ticket, ("classify", adapter, ticket.texts))

    # ---- the server's side -------------------------------------------------------------

    def _enqueue(self, ticket: Ticket, request: tuple[Any, ...]) -> Ticket:
        with self._lock:
            if self._dead is not None or self._stopping:
                raise RuntimeError(self._dead or "the engine is stopped")
            waiting = len(self._flight) - self._snapshot.running
            if waiting >= self.max_queue:
                raise QueueFull(waiting, retry_after=1.0)
            ticket.number = self._numbers
            self._numbers += 1
            self._flight[ticket.number] = ticket
        ticket.on_cancel = lambda: self._cancel(ticket)
        try:
            self._send((request[0], ticket.number, *request[1:]))
        except (OSError, ValueError) as exc:
            with self._lock:
                self._flight.pop(ticket.number, None)
            raise RuntimeError(f"the engine process is gone: {exc}") from exc
        return ticket

    def _cancel(self, ticket: Ticket) -> None:
        """Forget the request (the child sends nothing more for a cancelled one) and tell
        the child to drop it."""
        with self._lock:
            self._flight.pop(ticket.number, None)
        if ticket.answered or self._dead is not None:
            return
        with contextlib.suppress(OSError, ValueError):  # gone: `_receive` fails its requests
            self._send(("cancel", ticket.number))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _receive(self) -> None:
        """Deliver the child's events to their sinks until it stops or dies."""
        while True:
            try:
                kind, *payload = self.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "stopped":
                return
            events, snapshot, rows = payload
            self._snapshot = snapshot  # first: a client that sees an event sees its state
            for number, event in events:
                self._deliver(number, event)
            if self.on_batch is not None:
                for count in rows:
                    self.on_batch(count)
        self.process.join(timeout=5)
        if not self._stopping:
            code = self.process.exitcode
            self._dead = f"the engine process exited unexpectedly (exit code {code})"
            self._fail_all(self._dead)

    def _deliver(self, number: int, event: Event) -> None:
        if isinstance(event, Token):
            ticket = self._flight.get(number)
        else:
            with self._lock:
                ticket = self._flight.pop(number, None)
        if ticket is not None:
            emit(ticket, event)

    def _fail_all(self, message: str) -> None:
        with self._lock:
            tickets, self._flight = list(self._flight.values()), {}
        for ticket in tickets:
            emit(ticket, Failed(message))


def _torch_threads() -> int | None:
    """The server's torch thread count, when torch is loaded (the child uses the same)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _start_failure(config: ServeConfig, reason: str) -> StageError:
    return StageError(
        error(
            "FM1009",
            f"the engine process for `{config.base_model}` did not start: {reason}",
            help="run with `engine_process: false` in the server configuration to see the "
            "failure in this process, or check memory and the model folder",
        )
    )


# ---- the child ---------------------------------------------------------------------------


class _Outbox:
    """Events and batch sizes the engine produced, sent once per iteration. Appends and
    takes are single deque operations, so the engine thread (sinks, `on_batch`) and the
    command thread (a refused submission) never lose one to the other."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()  # one message at a time on the pipe
        self.events: deque[tuple[int, Event]] = deque()
        self.rows: deque[int] = deque()
        self.engine: Engine | None = None

    def sink(self, number: int, tickets: dict[int, Ticket]) -> Sink:
        events = self.events

        def sink(event: Event) -> None:
            events.append((number, event))
            if not isinstance(event, Token):
                tickets.pop(number, None)  # answered: nothing left to cancel

        return sink

    def flush(self) -> None:
        engine = self.engine
        if engine is None or not (self.events or self.rows):
            return
        with self.lock:  # taken and sent together: a request's events stay in order
            events = [self.events.popleft() for _ in range(len(self.events))]
            rows = [self.rows.popleft() for _ in range(len(self.rows))]
            snapshot = _Snapshot(
                engine.running(),
                engine.tokens_generated,
                engine.cache.stats(),
                engine.cache.activity(),
                SchedulerStats(engine.scheduler.skips, engine.scheduler.drains),
            )
            with contextlib.suppress(OSError, ValueError):  # the server is gone: we stop next
                self.conn.send(("events", events, snapshot, rows))


def child_main(conn: Connection, config_json: str, threads: int | None) -> None:
    """The engine process: load, report, then run the server's commands until told to stop
    or until the server's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    import torch

    if threads:
        torch.set_num_threads(threads)
    config = ServeConfig.model_validate_json(config_json)
    outbox = _Outbox(conn)
    try:
        engine = build_engine(config, on_batch=outbox.rows.append)
    except StageError as exc:
        conn.send(("failed", exc.diagnostics))  # a StageError does not survive pickling
        return
    except Exception as exc:  # reported to the server as FM1009
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    engine.max_queue = sys.maxsize  # the server bounds the queue (`EngineProcess._enqueue`)
    outbox.engine = engine
    engine.after_step = outbox.flush
    engine.start()
    info = _Info(
        engine.vocab_size,
        engine.max_positions,
        engine.untrained_heads,
        engine.replaces_layers(),
        engine.cache.bank.slots,
    )
    conn.send(("ready", info))
    _serve_commands(conn, engine, outbox)
    engine.stop()  # what is still queued or running gets Failed
    outbox.flush()
    with contextlib.suppress(OSError, ValueError):
        conn.send(("stopped",))


def _serve_commands(conn: Connection, engine: Engine, outbox: _Outbox) -> None:
    tickets: dict[int, Ticket] = {}  # not yet answered, for cancelling
    while True:
        try:
            kind, *args = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        if kind == "stop":
            return
        if kind == "cancel":
            ticket = tickets.pop(args[0], None)
            if ticket is not None:
                ticket.cancel()
            continue
        number = args[0]
        sink = outbox.sink(number, tickets)
        try:
            if kind == "generate":
                _, adapter, prompt_ids, sampling, stream = args
                ticket = engine.submit_generate(adapter, prompt_ids, sampling, sink, stream=stream)
            else:
                _, adapter, texts = args
                ticket = engine.submit_classify(adapter, texts, sink)
        except Exception as exc:  # the server checked it; fail this request alone
            outbox.events.append((number, Failed(f"{type(exc).__name__}: {exc}")))
            outbox.flush()
            continue
        tickets[number] = ticket
        if ticket.answered:  # its last event came before it was recorded
            tickets.pop(number, None)
