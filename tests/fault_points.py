"""`python -m tests.fault_points POINT ARGS…`: `fmc ARGS…` in a process of its own, killed with
SIGKILL at one chosen point (`none`: not at all). The kill is real: no `finally`, no
`atexit`, no flush; what is on disk is what a crash would leave. Used by
tests/test_fault_injection.py."""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inside_checkpoint_write(suffix: str) -> None:
    """Die half-way through the `torch.save` of the file whose path ends with `suffix`:
    half its bytes are on disk, and the checkpoint's marker is not."""
    import torch

    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, (str, os.PathLike)) and os.fspath(f).endswith(suffix):
            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            with open(f, "wb") as handle:
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            _die()
        real(obj, f, *args, **kwargs)

    torch.save = save


def after_stage(stage: str) -> None:
    """Die at the boundary after `stage`: its outputs written and recorded, nothing after."""
    from fmlang.backends import stopping

    real = stopping.check

    def check(where: str) -> None:
        if f"`{stage}`" in where:
            _die()
        real(where)

    stopping.check = check


def after_training() -> None:
    """Die once training has saved the final adapter, before the train stage evaluates
    it and records its outputs in the cache."""
    from fmlang.backends.train import evaluate

    def evaluate_then_die(*args: Any, **kwargs: Any) -> Any:
        _die()

    evaluate.evaluate = evaluate_then_die


POINTS: dict[str, Callable[[], None]] = {
    "none": lambda: None,
    "inside-checkpoint-write": lambda: inside_checkpoint_write("checkpoint-4/optimizer.pt"),
    "after-data-stage": lambda: after_stage("data:tickets"),
    "after-training": after_training,
}


def main() -> None:
    POINTS[sys.argv[1]]()
    sys.argv = ["fmc", *sys.argv[2:]]
    from fmlang.cli.main import main as fmc

    fmc()


if __name__ == "__main__":
    main()
