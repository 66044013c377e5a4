"""The serving engine: a bounded request queue and a scheduler thread doing continuous
(iteration-level, Orca-style) batching. Each iteration decodes one token for every running
sequence in one forward pass (rows may use different adapters), then admits waiting
requests into the free rows with their own prefill. Classification batches rows across
adapters the same way. Results go to each request's sink, called on the engine thread."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fmlang.backends.serve.batch import RunningBatch, left_pad, merge, select
from fmlang.backends.serve.cache import AdapterCache, NoFreeSlot
from fmlang.backends.serve.sampling import Sampling, generator_for, next_tokens
from fmlang.errors import StageError

MAX_SKIPS = 32  # iterations a request may be passed over before admission waits for it


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

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(eq=False)
class _Sequence:
    ticket: Ticket
    slot: int
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: str | None = None
    first_token: float = 0.0


class Engine:
    """Owns the model; every torch call happens on its thread."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        cache: AdapterCache,
        *,
        task: str = "generate",
        max_batch: int = 16,
        max_queue: int = 256,
        max_input_tokens: int = 1024,
        seed: int = 0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.cache = model, tokenizer, cache
        self.task, self.max_batch, self.max_queue = task, max_batch, max_queue
        self.max_input_tokens, self.seed = max_input_tokens, seed
        self.on_batch = on_batch
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = _pad_id(tokenizer, self.eos_ids)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self.tokens_generated = 0
        self._waiting: deque[Ticket] = deque()
        self._running: list[_Sequence] = []
        self._batch: RunningBatch | None = None
        self._cond = threading.Condition()
        self._numbers = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="fmc-serve-engine", daemon=True)

    # ---- the caller's side (any thread) ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler; requests still waiting or running get `Failed`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        for ticket in self._drain():
            _emit(ticket, Failed("the server is shutting down"))

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return len(self._running)

    def submit_generate(
        self,
        adapter: str | None,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        sink: Sink,
        *,
        stream: bool = False,
    ) -> Ticket:
        """Queue a generation; raises QueueFull when the queue is at its bound."""
        if not prompt_ids:
            raise ValueError("the prompt has no tokens")
        ticket = Ticket(adapter, sink, tuple(prompt_ids), (), sampling, stream)
        return self._enqueue(ticket)

    def submit_classify(self, adapter: str | None, texts: Sequence[str], sink: Sink) -> Ticket:
        """Queue a classification of `texts` (at most max_batch of them)."""
        if not texts or len(texts) > self.max_batch:
            raise ValueError(f"classify between 1 and {self.max_batch} inputs at a time")
        return self._enqueue(Ticket(adapter, sink, texts=tuple(texts)))

    def _enqueue(self, ticket: Ticket) -> Ticket:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the engine is stopped")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(len(self._waiting), retry_after=1.0)
            ticket.number = next(self._numbers)
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    def _drain(self) -> list[Ticket]:
        with self._cond:
            tickets = list(self._waiting) + [s.ticket for s in self._running]
            self._waiting.clear()
        return tickets

    # ---- the engine thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    return
            try:
                self._iterate()
            except Exception as exc:  # a bug, not a request's fault: fail the batch, go on
                self._fail([s.ticket for s in self._running], exc)
                for sequence in self._running:
                    self.cache.release(sequence.ticket.adapter)
                self._running, self._batch = [], None

    def _iterate(self) -> None:
        admitted = self._admit(self.max_batch - len(self._running))
        with torch.inference_mode():
            if self.task == "classify":
                self._classify(admitted)
            else:
                self._generate_step(admitted)

    def _admit(self, capacity: int) -> list[tuple[Ticket, int]]:
        """Waiting tickets, oldest first, for up to `capacity` rows, each with a device slot.
        A ticket whose adapter finds no free slot is skipped (it goes back, in order) so
        others can run; once the oldest has been skipped MAX_SKIPS times, nothing passes it
        and the slots drain until it fits."""
        admitted: list[tuple[Ticket, int]] = []
        skipped: list[Ticket] = []
        rows = 0
        while rows < capacity:
            ticket = self._next_waiting(capacity - rows, bool(admitted))
            if ticket is None:
                break
            try:
                admitted.append((ticket, self.cache.acquire(ticket.adapter)))
                rows += max(1, len(ticket.texts))
            except NoFreeSlot:
                ticket.skips += 1
                skipped.append(ticket)
                if skipped[0].skips > MAX_SKIPS:
                    break
            except StageError as exc:
                _emit(ticket, Failed(str(exc)))
        with self._cond:
            self._waiting.extendleft(reversed(skipped))
        return admitted

    def _next_waiting(self, room: int, any_taken: bool) -> Ticket | None:
        """The oldest live waiting ticket if its rows fit in `room`."""
        with self._cond:
            while self._waiting:
                ticket = self._waiting[0]
                if ticket.cancelled.is_set():
                    self._waiting.popleft()
                    continue
                if any_taken and max(1, len(ticket.texts)) > room:
                    return None
                return self._waiting.popleft()
        return None

    # ---- classification ---------------------------------------------------------------

    def _classify(self, admitted: list[tuple[Ticket, int]]) -> None:
        if not admitted:
            return
        texts = [text for ticket, _ in admitted for text in ticket.texts]
        slots = [slot for ticket, slot in admitted for _ in ticket.texts]
        try:
            encoded = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_input_tokens,
                return_tensors="pt",
            ).to(self.device)
            with self.cache.bank.rows(slots, self.device):
                logits = self.model(**encoded).logits
            probabilities = torch.softmax(logits.float(), dim=-1).cpu().tolist()
        except Exception as exc:
            self._fail([ticket for ticket, _ in admitted], exc)
        else:
            if self.on_batch:
                self.on_batch(len(texts))
            start = 0
            for ticket, _ in admitted:
                rows = probabilities[start : start + len(ticket.texts)]
                start += len(ticket.texts)
                _emit(ticket, Classified(tuple(tuple(row) for row in rows)))
        finally:
            for ticket, _ in admitted:
                self.cache.release(ticket.adapter)

    def _fail(self, tickets: list[Ticket], exc: Exception) -> None:
        for ticket in tickets:
            _emit(ticket, Failed(f"{type(exc).__name__}: {exc}"))

    # ---- generation ---------------------------------------------------------------------

    def _generate_step(self, admitted: list[tuple[Ticket, int]]) -> None:
        if self._running:
            self._guarded(self._running, self._decode)
        fresh = [
            _Sequence(ticket, slot, generator_for(ticket.sampling, self.seed + ticket.number))
            for ticket, slot in admitted
        ]
        if fresh and not self._guarded(fresh, self._prefill):
            for sequence in fresh:
                self.cache.release(sequence.ticket.adapter)
        self._retire()

    def _guarded(self, sequences: list[_Sequence], step: Callable[[list[_Sequence]], None]) -> bool:
        """Run a forward step; if it fails, those sequences fail (and leave the batch)."""
        try:
            step(sequences)
        except Exception as exc:
            self._fail([s.ticket for s in sequences], exc)
            for sequence in sequences:
                sequence.finish = "error"
            if sequences is self._running:
                self._batch = None
            return False
        return True

    def _forward(
        self,
        sequences: list[_Sequence],
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: object | None,
    ) -> tuple[torch.Tensor, object]:
        if self.on_batch:
            self.on_batch(len(sequences))
        with self.cache.bank.rows([s.slot for s in sequences], self.device):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :], out.past_key_values

    def _decode(self, sequences: list[_Sequence]) -> None:
        batch = self._batch
        if batch is None:
            raise RuntimeError("running sequences without a cache")
        ids = torch.tensor([[s.generated[-1]] for s in sequences], device=self.device)
        mask = torch.cat([batch.mask, batch.mask.new_ones(batch.rows, 1)], dim=1)
        logits, cache = self._forward(sequences, ids, mask, batch.positions[:, None], batch.cache)
        batch.cache, batch.mask, batch.positions = cache, mask, batch.positions + 1  # type: ignore[assignment]
        self._take(sequences, logits)

    def _prefill(self, sequences: list[_Sequence]) -> None:
        prompts = [list(s.ticket.prompt_ids) for s in sequences]
        ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
        logits, cache = self._forward(sequences, ids, mask, positions, None)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        fresh = RunningBatch(cache, mask, lengths)  # type: ignore[arg-type]
        self._take(sequences, logits)
        self._batch = merge(self._batch, fresh)
        self._running.extend(sequences)

    def _take(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        samplings = [s.ticket.sampling for s in sequences]
        tokens = next_tokens(logits, samplings, [s.generator for s in sequences])
        self.tokens_generated += len(tokens)
        now = time.perf_counter()
        for sequence, token in zip(sequences, tokens, strict=True):
            sequence.first_token = sequence.first_token or now
            sequence.generated.append(token)
            if token in self.eos_ids:
                sequence.finish = "stop"
            elif len(sequence.generated) >= sequence.ticket.sampling.max_new_tokens:
                sequence.finish = "length"
            if sequence.ticket.stream and sequence.finish != "stop":
                self._stream(sequence, token)

    def _output_ids(self, sequence: _Sequence) -> list[int]:
        ids = sequence.generated
        return ids[:-1] if sequence.finish == "stop" else ids

    def _text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)

    def _stream(self, sequence: _Sequence, token: int) -> None:
        text = self._text(self._output_ids(sequence))
        delta = ""
        if not text.endswith("\ufffd") and text.startswith(sequence.emitted):
            delta, sequence.emitted = text[len(sequence.emitted) :], text
        _emit(sequence.ticket, Token(token, delta))

    def _retire(self) -> None:
        """Finished, failed and cancelled sequences leave the batch and free their slots."""
        keep: list[int] = []
        for row, sequence in enumerate(self._running):
            if sequence.finish is None and not sequence.ticket.cancelled.is_set():
                keep.append(row)
                continue
            if sequence.finish in ("stop", "length") and not sequence.ticket.cancelled.is_set():
                self._finish(sequence)
            self.cache.release(sequence.ticket.adapter)
        if len(keep) != len(self._running):
            if self._batch is not None:
                self._batch = select(self._batch, keep)
            self._running = [self._running[row] for row in keep]
        if not self._running:
            self._batch = None

    def _finish(self, sequence: _Sequence) -> None:
        ids = self._output_ids(sequence)
        text = self._text(ids)
        tail = text[len(sequence.emitted) :] if text.startswith(sequence.emitted) else ""
        ticket = sequence.ticket
        assert sequence.finish is not None
        first = sequence.first_token - ticket.submitted
        finished = Finished(sequence.finish, text, tuple(ids), len(ticket.prompt_ids), tail, first)
        _emit(ticket, finished)


def _emit(ticket: Ticket, event: Event) -> None:
    """Deliver an event; a sink that fails (its client is gone) never stops the engine."""
    try:
        ticket.sink(event)
    except Exception:  # the request is abandoned; the others go on
        ticket.cancel()


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    found = (
        getattr(model.generation_config, "eos_token_id", None)
        if hasattr(model, "generation_config")
        else None
    )
    found = found if found is not None else model.config.eos_token_id
    ids = set(found if isinstance(found, list) else [found] if found is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(int(i) for i in ids)


def _pad_id(tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_ids) if eos_ids else 0
