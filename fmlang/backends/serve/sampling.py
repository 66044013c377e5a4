"""Sampling settings and next-token choice: greedy, or temperature with nucleus (top-p)
sampling from a per-request seeded generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def generator_for(sampling: Sampling, fallback_seed: int) -> torch.Generator | None:
    """A CPU generator seeded with the request's seed (or a per-request fallback)."""
    if sampling.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(sampling.seed if sampling.seed is not None else fallback_seed)
    return generator


def sample_row(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One token from `logits` ([vocab]) with temperature and top-p."""
    probs = torch.softmax(logits.float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the tokens ranked above each one
        keep = before < sampling.top_p
        keep[0] = True  # the nucleus always holds the top token, however small top_p is
        ordered = torch.where(keep, ordered, torch.zeros_like(ordered))
        choice = torch.multinomial(ordered / ordered.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def next_token(
    logits: torch.Tensor, greedy: int, sampling: Sampling, generator: torch.Generator | None
) -> int:
    """The next token of one row: `greedy` (the row's argmax) without a generator."""
    return greedy if generator is None else sample_row(logits, sampling, generator)
