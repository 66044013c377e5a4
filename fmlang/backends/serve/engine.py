"""The serving engine: a bounded request queue and a scheduler thread doing continuous
(iteration-level, Orca-style) batching. Each iteration decodes one token for every running
sequence in one forward pass (rows may use different adapters), then admits waiting
requests into the free rows with their own prefill. Classification batches rows across
adapters the same way. Results go to each request's sink, called on the engine thread.

A request's own work (its generator, its sampling, its text, its adapter's loading, even
its prefill) fails that request alone; only a failed shared decode step fails the batch.
Every device slot a request pins is released on every path: `Ticket.pinned` records the
pin, so releasing twice is impossible and a failure anywhere can release everything."""

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
from fmlang.backends.serve.sampling import Sampling, generator_for, next_token
from fmlang.backends.serve.tickets import (
    Classified,
    Event,
    Failed,
    Finished,
    QueueFull,
    Sink,
    Ticket,
    Token,
    emit,
)
from fmlang.errors import StageError

MAX_SKIPS = 32  # iterations a request may be passed over before admission waits for it

__all__ = ["Classified", "Engine", "Event", "Failed", "Finished", "QueueFull", "Ticket", "Token"]


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
        self.vocab_size = _vocab_size(model, tokenizer)
        self.tokens_generated = 0
        self._waiting: deque[Ticket] = deque()
        self._running: list[_Sequence] = []
        self._admitted: list[tuple[Ticket, int]] = []  # pinned this iteration, not yet running
        self._batch: RunningBatch | None = None
        self._cond = threading.Condition()
        # The fast tokenizer's settings (truncation, padding) are shared mutable state: the
        # server's tokenizing thread and this engine's classification take turns.
        self.tokenizer_lock = threading.Lock()
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
            emit(ticket, Failed("the server is shutting down"))
            self._unpin(ticket)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of `text` (any thread; the server calls it off its event loop)."""
        with self.tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

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
            except Exception as exc:  # a bug, not a request's fault: fail what is in flight
                self._abandon(exc)

    def _iterate(self) -> None:
        self._admit(self.max_batch - len(self._running))
        with torch.inference_mode():
            if self.task == "classify":
                self._classify(self._admitted)
            else:
                self._generate_step(self._admitted)
        self._admitted = []

    def _abandon(self, exc: Exception) -> None:
        """Fail every request admitted or running, release their slots, drop the batch."""
        tickets = [ticket for ticket, _ in self._admitted] + [s.ticket for s in self._running]
        self._fail(tickets, exc)
        for ticket in tickets:
            self._unpin(ticket)
        self._admitted, self._running, self._batch = [], [], None

    def _unpin(self, ticket: Ticket) -> None:
        """Release the ticket's adapter slot if it holds one (at most once)."""
        if ticket.pinned:
            ticket.pinned = False
            self.cache.release(ticket.adapter)

    def _drop(self, ticket: Ticket, exc: Exception) -> None:
        """This request fails alone and gives back its slot."""
        self._fail([ticket], exc)
        self._unpin(ticket)

    def _admit(self, capacity: int) -> None:
        """Waiting tickets, oldest first, for up to `capacity` rows, each pinning a device
        slot, into `_admitted`. A ticket whose adapter finds no free slot is skipped (it
        goes back, in order) so others can run; once the oldest has been skipped MAX_SKIPS
        times, nothing passes it and the slots drain until it fits. A ticket whose adapter
        cannot be loaded fails alone."""
        skipped: list[Ticket] = []
        rows = 0
        while rows < capacity:
            ticket = self._next_waiting(capacity - rows, bool(self._admitted))
            if ticket is None:
                break
            try:
                slot = self.cache.acquire(ticket.adapter)
            except NoFreeSlot:
                ticket.skips += 1
                skipped.append(ticket)
                if skipped[0].skips > MAX_SKIPS:
                    break
                continue
            except Exception as exc:
                self._fail([ticket], exc)
                continue
            ticket.pinned = True
            self._admitted.append((ticket, slot))
            rows += max(1, len(ticket.texts))
        with self._cond:
            self._waiting.extendleft(reversed(skipped))

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
        try:
            texts = [text for ticket, _ in admitted for text in ticket.texts]
            slots = [slot for ticket, slot in admitted for _ in ticket.texts]
            with self.tokenizer_lock:
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
                emit(ticket, Classified(tuple(tuple(row) for row in rows)))
        finally:
            for ticket, _ in admitted:
                self._unpin(ticket)

    def _fail(self, tickets: list[Ticket], exc: Exception) -> None:
        message = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
        for ticket in tickets:
            emit(ticket, Failed(message))

    # ---- generation ---------------------------------------------------------------------

    def _generate_step(self, admitted: list[tuple[Ticket, int]]) -> None:
        if self._running:
            self._guarded(self._running, self._decode)
        fresh = []
        for ticket, slot in admitted:
            try:
                generator = generator_for(ticket.sampling, self.seed + ticket.number)
            except Exception as exc:  # e.g. a seed torch cannot take: this request only
                self._drop(ticket, exc)
                continue
            fresh.append(_Sequence(ticket, slot, generator))
        if fresh:
            self._start(fresh)
        self._retire()

    def _start(self, fresh: list[_Sequence]) -> None:
        """Prefill new rows together; if that fails, each alone, so a request whose prefill
        fails fails by itself (and releases its slot) while the others start."""
        try:
            self._prefill(fresh)
        except Exception as exc:
            if len(fresh) == 1:
                self._drop(fresh[0].ticket, exc)
                return
            for sequence in fresh:
                self._start([sequence])

    def _guarded(self, sequences: list[_Sequence], step: Callable[[list[_Sequence]], None]) -> None:
        """Run the shared decode step; if it fails, every running sequence fails (and
        leaves the batch at `_retire`, releasing its slot)."""
        try:
            step(sequences)
        except Exception as exc:
            self._fail([s.ticket for s in sequences], exc)
            for sequence in sequences:
                sequence.finish = "error"
            self._batch = None

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
        """Forward the prompts and join the batch; nothing is sent to a client before the
        rows have joined, so a failed prefill can be retried row by row."""
        prompts = [list(s.ticket.prompt_ids) for s in sequences]
        ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
        logits, cache = self._forward(sequences, ids, mask, positions, None)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        fresh = RunningBatch(cache, mask, lengths)  # type: ignore[arg-type]
        self._batch = merge(self._batch, fresh)
        self._running.extend(sequences)
        self._take(sequences, logits)

    def _take(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        """Each row's next token; a row whose sampling or text fails fails alone."""
        greedy: list[int] = logits.argmax(-1).tolist()
        now = time.perf_counter()
        for row, sequence in enumerate(sequences):
            try:
                sampling = sequence.ticket.sampling
                token = next_token(logits[row], greedy[row], sampling, sequence.generator)
                self._advance(sequence, token, now)
            except Exception as exc:
                sequence.finish = "error"
                self._fail([sequence.ticket], exc)

    def _advance(self, sequence: _Sequence, token: int, now: float) -> None:
        self.tokens_generated += 1
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
        emit(sequence.ticket, Token(token, delta))

    def _retire(self) -> None:
        """Finished, failed and cancelled sequences leave the batch and free their slots."""
        keep: list[int] = []
        for row, sequence in enumerate(self._running):
            if sequence.finish is None and not sequence.ticket.cancelled.is_set():
                keep.append(row)
                continue
            if sequence.finish in ("stop", "length") and not sequence.ticket.cancelled.is_set():
                try:
                    self._finish(sequence)
                except Exception as exc:  # its text cannot be decoded: this request only
                    self._fail([sequence.ticket], exc)
            self._unpin(sequence.ticket)
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
        emit(ticket, finished)


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


def _vocab_size(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Token ids both the tokenizer and the model's embedding table know."""
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    return min(len(tokenizer), int(rows)) if isinstance(rows, int) else len(tokenizer)


def _pad_id(tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_ids) if eos_ids else 0
