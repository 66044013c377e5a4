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
from fmlang.backends.serve.cache import AdapterCache, CacheActivity, NoFreeSlot, TierStats
from fmlang.backends.serve.lora import Row
from fmlang.backends.serve.openmp import release_idle_pool
from fmlang.backends.serve.sampling import (
    RowLogprobs,
    Sampling,
    adjusted,
    generator_for,
    logprobs,
    next_token,
)
from fmlang.backends.serve.tickets import (
    Classified,
    Event,
    Failed,
    Finished,
    Mixture,
    QueueFull,
    Sink,
    Ticket,
    Token,
    TokenLogprob,
    classification_ticket,
    emit,
    generation_ticket,
)
from fmlang.backends.serve.tokens import TokenTexts
from fmlang.errors import StageError

MAX_SKIPS = 32  # iterations a request may be passed over before admission waits for it
LOOKAHEAD = 4  # admission and prefetch look this many batches' worth into the queue

__all__ = ["Classified", "Engine", "Event", "Failed", "Finished", "QueueFull", "Ticket", "Token"]


@dataclass
class SchedulerStats:
    """What admission did: younger requests admitted past a waiting one (each time, for
    each request passed over) and adapters drained (stopped taking new rows until a
    waiting request got a slot; counted once per episode)."""

    skips: int = 0
    drains: int = 0


@dataclass(eq=False)
class _Sequence:
    ticket: Ticket
    slot: Row  # its adapters' (slot, weight) pairs; () for the base model
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: str | None = None
    first_token: float = 0.0
    text: str = ""  # the output's text so far, when tracked (`_tracks`), cut at a stop string
    stopped: bool = False  # a stop string ended it (`text` is the final text)
    counts: torch.Tensor | None = None  # [vocab] times each token was generated (penalties)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    sent: int = 0  # logprobs already streamed


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
        max_skips: int = MAX_SKIPS,
    ) -> None:
        self.model, self.tokenizer, self.cache = model, tokenizer, cache
        self.max_skips = max_skips
        self.task, self.max_batch, self.max_queue = task, max_batch, max_queue
        self.max_input_tokens, self.seed = max_input_tokens, seed
        self.on_batch = on_batch
        self.after_step: Callable[[], None] | None = None  # after each iteration's events
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = _pad_id(tokenizer, self.eos_ids)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self.vocab_size = _vocab_size(model, tokenizer)
        # classification heads the base checkpoint lacks (randomly initialised at load):
        # rows of the bare base model would classify with them, so the server refuses those
        self.untrained_heads: frozenset[str] = frozenset()
        self.token_texts = TokenTexts(tokenizer)  # for log-probabilities (engine thread)
        self.tokens_generated = 0
        self._waiting: deque[Ticket] = deque()
        self._running: list[_Sequence] = []
        self._admitted: list[tuple[Ticket, Row]] = []  # pinned this iteration, not yet running
        self.scheduler = SchedulerStats()
        self._draining: set[str] = set()  # adapters admitting no new rows (engine thread)
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
        release_idle_pool()  # so the engine thread's OpenMP workers spin (see `openmp`)
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

    def cache_stats(self) -> dict[str, TierStats]:
        return self.cache.stats()

    def cache_activity(self) -> CacheActivity:
        return self.cache.activity()

    def scheduler_stats(self) -> SchedulerStats:
        return self.scheduler

    def alive(self) -> bool:
        """False once the engine thread has stopped (after `stop`)."""
        return not self._stopping

    def running(self) -> int:
        return len(self._running)

    def submit_generate(
        self,
        adapter: str | Mixture | None,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        sink: Sink,
        *,
        stream: bool = False,
    ) -> Ticket:
        """Queue a generation; raises QueueFull when the queue is at its bound."""
        ticket = generation_ticket(adapter, prompt_ids, sampling, sink, stream, self.check_mixture)
        return self._enqueue(ticket)

    def check_mixture(self, mixture: Mixture) -> None:
        """Raise ValueError unless the engine can run `mixture` (known LoRA adapters, no
        replaced heads, no more adapters than device slots)."""
        mixture.check(self.task, self.replaces_layers(), self.cache.bank.slots)

    def replaces_layers(self) -> dict[str, bool]:
        """Each adapter's name → whether it replaces whole layers (a classifier's head)."""
        return {name: bool(spec.heads) for name, spec in self.cache.specs.items()}

    def submit_classify(self, adapter: str | None, texts: Sequence[str], sink: Sink) -> Ticket:
        """Queue a classification of `texts` (at most max_batch of them)."""
        return self._enqueue(classification_ticket(adapter, texts, sink, self.max_batch))

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
            if self.after_step is not None:
                self.after_step()

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
        """Release the ticket's adapter slots if it holds them (at most once)."""
        if ticket.pinned:
            ticket.pinned = False
            self.cache.release_all(ticket.adapters)

    def _drop(self, ticket: Ticket, exc: Exception) -> None:
        """This request fails alone and gives back its slot."""
        self._fail([ticket], exc)
        self._unpin(ticket)

    def _admit(self, capacity: int) -> None:
        """Waiting tickets, oldest first, for up to `capacity` rows, each pinning its
        adapters' device slots, into `_admitted`; then stage the next ones' adapters.

        A ticket whose adapters find no slot waits and younger tickets whose adapters are
        resident go ahead (grouping rows by resident adapter). For the oldest such ticket
        the scheduler drains slots: the resident adapters with the fewest running rows
        (`_drain_for`) admit no new rows, so their slots free within one generation
        instead of never. Fairness is bounded: once a waiting ticket has been passed over
        `max_skips` times, nothing younger is admitted until it runs. A ticket whose
        adapter cannot be loaded fails alone."""
        with self._cond:
            window = list(itertools.islice(self._waiting, LOOKAHEAD * self.max_batch))
        wanted = [name for ticket in window for name in ticket.adapters]
        gone: set[int] = set()  # positions in `window` admitted, failed or cancelled
        draining: set[str] = set()
        blocked = False
        rows, youngest = 0, -1
        for position, ticket in enumerate(window):
            if ticket.cancelled.is_set():
                gone.add(position)
                continue
            need = max(1, len(ticket.texts))
            if rows >= capacity or (rows and need > capacity - rows):
                break
            if ticket.skips < self.max_skips and draining.intersection(ticket.adapters):
                continue
            try:
                slots = self.cache.acquire_all(ticket.adapters, wanted[position:])
            except NoFreeSlot:
                if not blocked:
                    blocked, draining = True, self._drain_for(ticket)
                if ticket.skips >= self.max_skips:
                    break  # the bound: it was passed over enough, nothing younger goes
                continue
            except Exception as exc:
                self._fail([ticket], exc)
                gone.add(position)
                continue
            ticket.pinned = True
            self._admitted.append((ticket, ticket.weights(slots)))
            rows += need
            gone.add(position)
            youngest = position
        for position in range(youngest):
            if position not in gone:
                window[position].skips += 1
                self.scheduler.skips += 1
        self.scheduler.drains += len(draining - self._draining)  # newly drained adapters
        self._draining = draining
        with self._cond:
            taken = {id(window[p]) for p in gone}
            if taken:
                self._waiting = deque(t for t in self._waiting if id(t) not in taken)
        self._prefetch([t for p, t in enumerate(window) if p not in gone], wanted)

    def _drain_for(self, ticket: Ticket) -> set[str]:
        """The resident adapters to stop admitting rows for so that `ticket`'s adapters
        get slots: those with the fewest pinned rows (they free soonest)."""
        pins = self.cache.pins()
        resident = self.cache.resident()["device"]
        missing = [n for n in ticket.adapters if n not in resident]
        free = self.cache.bank.slots - len(resident)
        unpinned = sum(1 for n in resident if not pins.get(n) and n not in ticket.adapters)
        short = len(missing) - free - unpinned
        if short <= 0:
            return set()
        busy = [n for n in resident if pins.get(n) and n not in ticket.adapters]
        return set(sorted(busy, key=lambda n: pins[n])[:short])

    def _prefetch(self, waiting: list[Ticket], wanted: list[str]) -> None:
        """Stage the adapters of the next waiting tickets (queue order, about one batch's
        worth of slots) into free or unneeded slots before their turn."""
        budget = self.cache.bank.slots
        for ticket in waiting:
            for name in ticket.adapters:
                if budget <= 0:
                    return
                budget -= 1
                try:
                    self.cache.prefetch(name, wanted)
                except Exception:  # its own admission reports it
                    continue

    # ---- classification ---------------------------------------------------------------

    def _classify(self, admitted: list[tuple[Ticket, Row]]) -> None:
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

    def _generate_step(self, admitted: list[tuple[Ticket, Row]]) -> None:
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
        """Each row's next token (`sampling`: penalties and bias on the rows that ask, one
        argmax for all, seeded draws row by row) and, for the rows that ask, its
        log-probabilities; a row whose sampling or text fails fails alone."""
        samplings = [s.ticket.sampling for s in sequences]
        counts = [self._counts(s, logits) for s in sequences]
        scores = adjusted(logits, samplings, counts)
        greedy: list[int] = scores.argmax(-1).tolist()
        now = time.perf_counter()
        tokens: list[int | None] = []
        for row, sequence in enumerate(sequences):
            try:
                tokens.append(
                    next_token(scores[row], greedy[row], samplings[row], sequence.generator)
                )
            except Exception as exc:
                tokens.append(None)
                sequence.finish = "error"
                self._fail([sequence.ticket], exc)
        wanted = [None if t is None else p.logprobs for t, p in zip(tokens, samplings, strict=True)]
        found = logprobs(logits, [t or 0 for t in tokens], wanted)
        for sequence, token, row_logprobs in zip(sequences, tokens, found, strict=True):
            if token is None:
                continue
            try:
                self._advance(sequence, token, now, row_logprobs)
            except Exception as exc:
                sequence.finish = "error"
                self._fail([sequence.ticket], exc)

    def _counts(self, sequence: _Sequence, logits: torch.Tensor) -> torch.Tensor | None:
        """The sequence's generated-token counts, made on first use by a penalised row."""
        sampling = sequence.ticket.sampling
        if sequence.counts is None and (sampling.presence_penalty or sampling.frequency_penalty):
            sequence.counts = logits.new_zeros(logits.shape[-1], dtype=torch.float32)
        return sequence.counts

    def _advance(
        self, sequence: _Sequence, token: int, now: float, found: RowLogprobs | None
    ) -> None:
        self.tokens_generated += 1
        sequence.first_token = sequence.first_token or now
        sequence.generated.append(token)
        if sequence.counts is not None and token < sequence.counts.shape[0]:
            sequence.counts[token] += 1
        sampling = sequence.ticket.sampling
        if token in self.eos_ids:
            sequence.finish = "stop"
            return
        before = sequence.text
        if _tracks(sequence):
            self._track(sequence, before)
        if found is not None:
            sequence.logprobs.append(self._logprob(token, found, len(before)))
        if sequence.finish is None and len(sequence.generated) >= sampling.max_new_tokens:
            sequence.finish = "length"
        if sequence.ticket.stream and sequence.finish is None:
            self._stream(sequence, token)

    def _track(self, sequence: _Sequence, before: str) -> None:
        """The output's text with the new token; cut (and finished) at the first stop
        string, looking only where the new text can complete one: from where it differs
        from the text before (an incomplete character's U+FFFD may have become a character)."""
        text = self._text(sequence.generated)
        stops = sequence.ticket.sampling.stop
        if stops:
            same = _same_start(before, text)
            start = max(0, same - max(len(stop) for stop in stops) + 1)
            hits = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
            if hits:
                text, sequence.finish, sequence.stopped = text[: min(hits)], "stop", True
        sequence.text = text

    def _logprob(self, token: int, found: RowLogprobs, offset: int) -> TokenLogprob:
        top = tuple((*self.token_texts.get(i), value) for i, value in found.top)
        text, raw = self.token_texts.get(token)
        alternatives = tuple((name, value, data) for name, data, value in top)
        return TokenLogprob(text, found.logprob, alternatives, offset, raw)

    def _output_ids(self, sequence: _Sequence) -> list[int]:
        """The generated ids less a final end-of-sequence token (a stop string's are kept:
        they were generated and count as completion tokens)."""
        ids = sequence.generated
        return ids[:-1] if sequence.finish == "stop" and not sequence.stopped else ids

    def _text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)

    def _stream(self, sequence: _Sequence, token: int) -> None:
        """The text the new token completes, less an incomplete character and less any end
        that may still grow into a stop string (it goes out later, or never)."""
        text = sequence.text
        end = len(text) - _held(text, sequence.ticket.sampling.stop)
        delta = ""
        entries: tuple[TokenLogprob, ...] = ()
        fresh = end > len(sequence.emitted) and text.startswith(sequence.emitted)
        if fresh and not text[:end].endswith("\ufffd"):
            delta, sequence.emitted = text[len(sequence.emitted) : end], text[:end]
            entries = tuple(sequence.logprobs[sequence.sent :])
            sequence.sent = len(sequence.logprobs)
        emit(sequence.ticket, Token(token, delta, entries))

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
        text = sequence.text if sequence.stopped else self._text(ids)
        tail = text[len(sequence.emitted) :] if text.startswith(sequence.emitted) else ""
        ticket = sequence.ticket
        assert sequence.finish is not None
        first = sequence.first_token - ticket.submitted
        entries = tuple(sequence.logprobs)
        finished = Finished(
            sequence.finish,
            text,
            tuple(ids),
            len(ticket.prompt_ids),
            tail,
            first,
            entries,
            entries[sequence.sent :],
        )
        emit(ticket, finished)


def _tracks(sequence: _Sequence) -> bool:
    """Whether the output's text is decoded at every token: for streaming, stop strings
    and log-probabilities' text offsets (otherwise once, at the end)."""
    sampling = sequence.ticket.sampling
    return sequence.ticket.stream or bool(sampling.stop) or sampling.logprobs is not None


def _same_start(first: str, second: str) -> int:
    """The length of the longest common prefix of two texts."""
    size = min(len(first), len(second))
    if first[:size] == second[:size]:
        return size
    return next(i for i in range(size) if first[i] != second[i])


def _held(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` begin some stop string (and so may not be
    streamed yet)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


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
