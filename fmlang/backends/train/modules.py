"""Adapter targets checked against a loaded model's real modules.

`lower.adapters.check_modules` checks target names against the base model's `modules` fact in
the spec; this checks them against `named_modules()` of the model actually loaded, the way
PEFT matches them: a target matches a module whose full name equals it or ends with
`.<target>` (so `query` and `attention.self.query` both match BERT's query projections).
Only module types LoRA can wrap count (linear, embedding and convolution layers, and
transformers' GPT-2 style `Conv1D`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fmlang.diagnostics import Span, error
from fmlang.errors import StageError
from fmlang.suggest import did_you_mean

ADAPTABLE_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")


def adaptable_names(torch_model: Any) -> list[str]:
    """Full names of the modules an adapter can wrap, in the model's order."""
    return [name for name, module in torch_model.named_modules() if name and _adaptable(module)]


def _adaptable(module: Any) -> bool:
    return any(cls.__name__ in ADAPTABLE_TYPES for cls in type(module).__mro__)


def leaf_names(torch_model: Any) -> list[str]:
    """The distinct last components of the adaptable modules' names, sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name in adaptable_names(torch_model)})


def matches(target: str, name: str) -> bool:
    """PEFT's rule for a target given as a list entry (not a regex)."""
    return name == target or name.endswith(f".{target}")


def check_targets(
    torch_model: Any, targets: Iterable[str], span: Span | None = None, model: str = ""
) -> None:
    """Raise FM0801 naming the first target no adaptable module of `torch_model` matches."""
    names = adaptable_names(torch_model)
    valid = leaf_names(torch_model)
    for target in targets:
        if any(matches(target, name) for name in names):
            continue
        owner = f" of `{model}`" if model else ""
        raise StageError(
            error(
                "FM0801",
                f"the loaded base model{owner} has no module `{target}` to adapt",
                span,
                "not a module of the loaded model",
                help=did_you_mean(target, valid) or f"its adaptable modules are {', '.join(valid)}",
                notes=(f"valid module names: {', '.join(valid)}",),
            )
        )
