"""The optimizer step inside the backward pass (`optimizer_in_backward`).

Each trainable parameter gets its own optimizer (the class and settings transformers picks
for `optim`, weight decay as the Trainer groups it) and a post-accumulate-grad hook that
steps it and frees its gradient as soon as the gradient is complete, so at most one
parameter's gradient is alive at a time. `InBackwardOptimizer` is what the Trainer sees:
its step and zero_grad do nothing (the hooks did the work), its param groups are the inner
optimizers' own dicts, so the Trainer's LR scheduler sets every inner learning rate, and
its state dict holds every inner state, so checkpoints resume. Clipping by the global norm
is impossible (the lowering sets `max_grad_norm` to 0); gradient accumulation, several
processes and fp16 loss scaling are refused before training (FM0836).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class InBackwardOptimizer(torch.optim.Optimizer):
    """The Trainer's view of the per-parameter optimizers stepped in the backward hooks."""

    def __init__(self, inner: list[torch.optim.Optimizer], hooks: list[Any]) -> None:
        params = [p for opt in inner for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.inner = inner
        self.hooks = hooks
        self.param_groups = [group for opt in inner for group in opt.param_groups]

    def release(self) -> None:
        """Remove the hooks once training ends: each hook holds its optimizer, which holds
        the parameter, so without this the model and its optimizer state (gigabytes of
        device memory) outlive the run (measured: 6.97 GiB left allocated on an H200)."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """Nothing: each parameter already stepped in its hook."""
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for opt, state in zip(self.inner, state_dict["inner"], strict=True):
            opt.load_state_dict(state)
        # loading gives the inner optimizers new group dicts: share those (in place, for
        # whoever holds this list)
        self.param_groups[:] = [group for opt in self.inner for group in opt.param_groups]


def _stepper(optimizer: torch.optim.Optimizer) -> Callable[[torch.Tensor], None]:
    def hook(_: torch.Tensor) -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return hook


def in_backward_optimizer(
    model: Any, optimizer_cls: Any, kwargs: dict[str, Any], decay: set[str], weight_decay: float
) -> InBackwardOptimizer:
    """One `optimizer_cls(**kwargs)` per trainable parameter of `model`, with its hook;
    parameters named in `decay` get `weight_decay`, the others none."""
    inner, hooks = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = {"params": [param], "weight_decay": weight_decay if name in decay else 0.0}
        optimizer = optimizer_cls([group], **kwargs)
        hooks.append(param.register_post_accumulate_grad_hook(_stepper(optimizer)))
        inner.append(optimizer)
    return InBackwardOptimizer(inner, hooks)
