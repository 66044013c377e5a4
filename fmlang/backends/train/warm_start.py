"""Warm start: initialise a new adapter from a trained one's weights (`fmc rebase`).

A job with `warm_start = "<adapter folder>"` builds its adapter as usual on its (new) base,
then copies the trained adapter's tensors into it before the first step, so training
continues from the old adapter instead of from peft's initialisation (LoRA's B = 0).

That is only sound when the new base has the modules the adapter adapts, with the same
shapes: the adapter's targets must name modules of the new base, and the peft state dict the
new base yields (names and shapes) must equal the saved one tensor for tensor. Either
mismatch is FM0881, naming what differs; nothing is partly loaded. Works for every peft
adapter kind whose weights peft saves (LoRA, DoRA, IA3, prompt and prefix tuning), the
classifier head included.
"""

from __future__ import annotations

from typing import Any

from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import error
from fmlang.errors import StageError

SHOWN = 8  # differences listed in the diagnostic before "and N more"
PREFIX = "base_model.model."


def require_targets(job: TrainJob, model: Any, config: Any) -> None:
    """FM0881 when a target of the adapter names no adaptable module of the new base."""
    from fmlang.backends.train.modules import adaptable_names, leaf_names, matches

    targets = getattr(config, "target_modules", None)
    if not targets or isinstance(targets, str):
        return
    names = adaptable_names(model)
    missing = [t for t in sorted(targets) if not any(matches(t, n) for n in names)]
    if missing:
        listed = ", ".join(f"`{t}`" for t in missing)
        raise mismatch(
            job,
            f"the new base has no module {listed} that the adapter adapts",
            (f"the new base's adaptable modules are {', '.join(leaf_names(model))}",),
        )


def warm_start(job: TrainJob, peft_model: Any) -> int:
    """Copy the adapter in `job.warm_start` into `peft_model`'s adapter; the number of
    tensors copied. FM0881 (nothing copied) when names or shapes differ."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    assert job.warm_start is not None
    saved = load_peft_weights(job.warm_start, device="cpu")
    expected = get_peft_model_state_dict(peft_model)
    differences = compare(
        {k: tuple(v.shape) for k, v in saved.items()},
        {k: tuple(v.shape) for k, v in expected.items()},
    )
    if differences:
        shown = differences[:SHOWN]
        more = len(differences) - len(shown)
        notes = (*shown, *([f"and {more} more"] if more else []))
        raise mismatch(job, f"{len(differences)} adapter tensors do not fit the new base", notes)
    result = set_peft_model_state_dict(peft_model, saved)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:  # peft could not place a tensor it was given
        raise mismatch(job, "peft could not load every adapter tensor", tuple(unexpected[:SHOWN]))
    return len(saved)


def compare(saved: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> list[str]:
    """What differs between the saved adapter's tensors and those the new base yields, one
    line each, in name order."""
    lines = []
    for name in sorted(set(saved) | set(expected)):
        shown = name.removeprefix(PREFIX)
        if name not in expected:
            lines.append(f"`{shown}` {list(saved[name])}: in the adapter, not on the new base")
        elif name not in saved:
            lines.append(f"`{shown}` {list(expected[name])}: on the new base, not in the adapter")
        elif saved[name] != expected[name]:
            lines.append(
                f"`{shown}`: {list(saved[name])} in the adapter, "
                f"{list(expected[name])} on the new base"
            )
    return lines


def mismatch(job: TrainJob, what: str, notes: tuple[str, ...]) -> StageError:
    return StageError(
        error(
            "FM0881",
            f"`{job.model}` cannot be rebased onto `{job.base.kind}:{job.base.location}`: {what}",
            job.span("base"),
            "its adapter does not fit the new base",
            help="rebase onto a checkpoint of the same architecture (same module names and "
            "shapes), or train the model on the new base from scratch (change its `base` and "
            "run `fmc run`)",
            notes=(*notes, f"the trained adapter: {job.warm_start}"),
        )
    )
