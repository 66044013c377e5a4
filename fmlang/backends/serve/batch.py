"""The running batch's key/value cache: left-padded rows with an attention mask and each
row's next position. Rows leave (finished) and join (admitted, after their own prefill),
so the cache is re-packed: selected, left-trimmed, or padded and concatenated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class RunningBatch:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, length] long, 0 = left padding
    positions: torch.Tensor  # [rows] long: the position the next token takes

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and position ids for prompts padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise RuntimeError(f"unsupported cache layer {type(layer).__name__}")
        out.append((keys, values))
    return out


def _rebuild(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def select(batch: RunningBatch, keep: list[int]) -> RunningBatch | None:
    """Only rows `keep`, with columns that are padding in every kept row trimmed away."""
    if not keep:
        return None
    index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    mask = batch.mask.index_select(0, index)
    start = int((mask.sum(0) > 0).nonzero()[0, 0])
    layers = [
        (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
        for k, v in _layers(batch.cache)
    ]
    return RunningBatch(_rebuild(layers), mask[:, start:], batch.positions.index_select(0, index))


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(first: RunningBatch | None, second: RunningBatch) -> RunningBatch:
    """`first`'s rows then `second`'s, padded on the left to a common length."""
    if first is None:
        return second
    width = max(first.mask.shape[1], second.mask.shape[1])
    layers = [
        (
            torch.cat([_pad_left(k1, width, 2), _pad_left(k2, width, 2)]),
            torch.cat([_pad_left(v1, width, 2), _pad_left(v2, width, 2)]),
        )
        for (k1, v1), (k2, v2) in zip(_layers(first.cache), _layers(second.cache), strict=True)
    ]
    mask = torch.cat([_pad_left(first.mask, width, 1), _pad_left(second.mask, width, 1)])
    return RunningBatch(_rebuild(layers), mask, torch.cat([first.positions, second.positions]))
