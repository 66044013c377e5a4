"""Losses the executor computes itself.

`soft_cross_entropy`: the classification loss against probability vectors (soft labels).
`chunked_causal_lm_loss`: the causal-LM cross-entropy computed over the sequence in chunks,
as torchtune's `CEWithChunkedOutputLoss` does: per chunk the output projection, the upcast
to fp32 and the cross-entropy, so the fp32 logits of the whole sequence are never one
tensor. It equals the model's own loss (labels shifted left, -100 ignored, the sum divided
by the number of target tokens, or by `num_items` under gradient accumulation).
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100
LOSS_CHUNKS = 8


def soft_cross_entropy(logits: Any, targets: Any) -> Any:
    """Cross-entropy against a probability vector per row (the Snorkel end-model loss);
    with one-hot targets it equals the usual cross-entropy."""
    import torch

    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def chunked_causal_lm_loss(
    hidden: Any, lm_head: Any, labels: Any, num_items: Any = None, chunks: int = LOSS_CHUNKS
) -> Any:
    """The mean next-token cross-entropy of `hidden` (batch x seq x hidden, the final
    normed states) through `lm_head`, computed over `chunks` slices of the sequence. Each
    slice is cast to the head's dtype: under mixed precision accelerate returns the model's
    outputs, hidden states included, in fp32."""
    import torch
    import torch.nn.functional as F

    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].to(hidden.device)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    pieces = zip(hidden.chunk(chunks, dim=1), targets.chunk(chunks, dim=1), strict=True)
    dtype = lm_head.weight.dtype  # mixed precision hands the hidden states back in fp32
    for states, target in pieces:
        logits = lm_head(states.to(dtype)).float()
        total = total + F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
    count = num_items if num_items is not None else (targets != IGNORE_INDEX).sum()
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count


def chunked_loss_forward(
    model: Any, unwrapped: Any, inputs: dict[str, Any], num_items: Any
) -> tuple[Any, Any]:
    """One forward pass through `model` (as the Trainer wrapped it) that keeps the logits of
    the last position only (`logits_to_keep`), then the chunked loss over the final hidden
    states through the output projection of `unwrapped` (the same model, unwrapped)."""
    from peft import PeftModel

    labels = inputs["labels"]
    features = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**features, logits_to_keep=1, output_hidden_states=True)
    inner: Any = unwrapped.get_base_model() if isinstance(unwrapped, PeftModel) else unwrapped
    loss = chunked_causal_lm_loss(
        outputs.hidden_states[-1], inner.get_output_embeddings(), labels, num_items
    )
    return loss, outputs
