"""What the HTTP server needs of an engine, wherever it runs: `Engine` on a thread of the
server's process, or `EngineProcess` (remote.py) in a process of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from fmlang.backends.serve.cache import CacheActivity, TierStats
from fmlang.backends.serve.engine import SchedulerStats
from fmlang.backends.serve.sampling import Sampling
from fmlang.backends.serve.tickets import Mixture, Sink, Ticket


class Served(Protocol):
    """The engine as the server sees it (any thread may call it; sinks run on another)."""

    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    max_positions: int
    untrained_heads: frozenset[str]
    on_batch: Callable[[int], None] | None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def encode(self, text: str, *, special: bool = True) -> list[int]: ...
    def queue_depth(self) -> int: ...
    def running(self) -> int: ...
    def check_mixture(self, mixture: Mixture) -> None: ...
    def cache_stats(self) -> dict[str, TierStats]: ...
    def cache_activity(self) -> CacheActivity: ...
    def scheduler_stats(self) -> SchedulerStats: ...
    def alive(self) -> bool: ...

    def submit_generate(
        self,
        adapter: str | Mixture | None,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        sink: Sink,
        *,
        stream: bool = False,
    ) -> Ticket: ...

    def submit_classify(self, adapter: str | None, texts: Sequence[str], sink: Sink) -> Ticket: ...
