"""The training worker: `python -m fmlang.backends.train.worker --job job.json`.

It also runs under `torchrun --nproc-per-node N -m fmlang.backends.train.worker --job …`:
the Trainer reads torchrun's environment and trains with DDP (gloo on CPU, NCCL on GPUs).
A failure the user can fix prints its diagnostics (one `file:line:col: error[FMxxxx]: …`
line each, plus the help) and exits 1, or 2 when every one is an I/O problem. SIGINT or
SIGTERM stops training after the current step with a checkpoint (`stopping`): the worker
says so and exits with 128 + the signal's number; rerunning it resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from fmlang.backends import stopping
from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import error
from fmlang.errors import StageError


def read_job(path: Path) -> TrainJob:
    """The job in `path`; a StageError when it is missing or not a valid job."""
    try:
        return TrainJob.read(path)
    except (OSError, ValueError, ValidationError) as exc:
        raise StageError(
            error(
                "FM0831",
                f"cannot read the training job {path}",
                help="rebuild it with `fmc run` (the same fmc version reads it)",
                notes=(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,),
            )
        ) from exc


def _report(exc: StageError) -> int:
    from fmlang.diagnostics.codes import is_io
    from fmlang.diagnostics.render import short

    for diagnostic in exc.diagnostics:
        print(short(diagnostic), file=sys.stderr)
        if diagnostic.help:
            print(f"  help: {diagnostic.help}", file=sys.stderr)
    return 2 if all(is_io(d.code) for d in exc.diagnostics) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmlang.backends.train.worker")
    parser.add_argument("--job", type=Path, required=True, help="the job file (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options = parser.parse_args(argv)
    try:
        from fmlang.backends.train.trainer import train

        with stopping.requests():
            result = train(read_job(options.job), progress=not options.no_progress)
    except StageError as exc:
        return _report(exc)
    except stopping.Interrupted as exc:
        print(f"{exc}; rerun the same command to resume", file=sys.stderr)
        return exc.exit_code
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {result.model}: {result.steps} steps, final loss {result.final_loss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
