"""Sampling settings and next-token choice for a batch of rows, each with its own settings.

A decode step gives one logits row per running sequence. The rows are processed together
where that is cheap and alone where it must be:

- penalties and logit bias (OpenAI's formula, over the tokens the sequence generated so
  far: `logit[j] -= count[j] · frequency_penalty + (count[j] > 0) · presence_penalty`,
  then `+ logit_bias[j]`) are one subtraction on the rows that ask for them;
- greedy rows take the argmax of their (adjusted) row, all rows in one call;
- sampled rows draw from their own seeded CPU generator (so a seed gives the same tokens
  whatever else is in the batch): temperature, then top-k, then top-p (nucleus);
- log-probabilities, for the rows that ask, are `log_softmax` of the model's raw logits
  (before penalties, bias and temperature, as vLLM reports them), top-k in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

UINT64 = 2**64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    top_k: int = 0  # 0: every token
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    stop: tuple[str, ...] = ()  # the text ends before the first of these
    logprobs: int | None = None  # alternatives reported per token; None: no logprobs

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def adjusts(self) -> bool:
        """Whether the logits change before the choice (penalties or bias)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


def choice_seed(seed: int, index: int) -> int:
    """The seed of choice `index` of a request seeded `seed` (n > 1): `seed + index`,
    wrapped into the signed 64-bit range, so every choice is reproducible and distinct."""
    value = (seed + index - INT64_MIN) % UINT64 + INT64_MIN
    return value


def generator_for(sampling: Sampling, fallback_seed: int) -> torch.Generator | None:
    """A CPU generator seeded with the request's seed (or a per-request fallback)."""
    if sampling.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(sampling.seed if sampling.seed is not None else fallback_seed)
    return generator


def adjusted(
    logits: torch.Tensor, samplings: Sequence[Sampling], counts: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """`logits` ([rows, vocab]) with each row's penalties and bias applied (a new float
    tensor when any row adjusts; `logits` itself otherwise). `counts[row]` holds how often
    each token id was generated so far (a [vocab] float tensor, or None when the row
    adjusts nothing)."""
    rows = [row for row, sampling in enumerate(samplings) if sampling.adjusts]
    if not rows:
        return logits
    out = logits.float().clone()
    vocab = out.shape[-1]
    for row in rows:
        sampling, count = samplings[row], counts[row]
        if count is not None and (sampling.presence_penalty or sampling.frequency_penalty):
            penalty = count * sampling.frequency_penalty
            penalty += (count > 0).to(out.dtype) * sampling.presence_penalty
            out[row] -= penalty
        for token, bias in sampling.logit_bias:
            if token < vocab:
                out[row, token] += bias
    return out


def sample_row(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One token from `logits` ([vocab]) with temperature, top-k and top-p."""
    scaled = logits.float().cpu() / sampling.temperature
    if 0 < sampling.top_k < scaled.shape[-1]:
        kth = scaled.topk(sampling.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
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


@dataclass(frozen=True)
class RowLogprobs:
    """The chosen token's log-probability and the row's most likely alternatives."""

    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, log-probability), most likely first


def logprobs(
    logits: torch.Tensor, tokens: Sequence[int], wanted: Sequence[int | None]
) -> list[RowLogprobs | None]:
    """For each row with `wanted[row]` not None: the log-probability of `tokens[row]` under
    `log_softmax(logits[row])` and its `wanted[row]` most likely tokens."""
    rows = [row for row, k in enumerate(wanted) if k is not None]
    out: list[RowLogprobs | None] = [None] * len(tokens)
    if not rows:
        return out
    index = torch.tensor(rows, device=logits.device)
    log = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    chosen = torch.tensor([tokens[row] for row in rows], device=logits.device)
    picked = log.gather(1, chosen[:, None])[:, 0].tolist()
    k = min(max(int(wanted[row] or 0) for row in rows), log.shape[-1])
    values, ids = log.topk(k, dim=-1) if k else (log[:, :0], log[:, :0].long())
    values_list, ids_list = values.tolist(), ids.tolist()
    for position, row in enumerate(rows):
        own = int(wanted[row] or 0)
        top = tuple(zip(ids_list[position][:own], values_list[position][:own], strict=True))
        out[row] = RowLogprobs(float(picked[position]), top)
    return out
