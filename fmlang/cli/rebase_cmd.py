"""`fmc rebase FILE MODEL --onto NEW`: warm-start MODEL's trained adapter on a new base
(`fmlang.backends.rebase`). Runs like `fmc run`: the spec is checked, the build folder
rebuilt when stale, the build folder locked, access checked. Heavy imports happen inside."""

from __future__ import annotations

import json
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fmlang.backends.rebase import Rebased


@click.command("rebase")
@click.argument("file", type=click.Path())
@click.argument("model")
@click.option("--onto", required=True, metavar="NEW",
              help="the new base: a base model the spec declares or imports, local:DIR, "
              "hub:ORG/NAME[@REVISION] or pip:PACKAGE")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="passes over the training data from the warm start (a max_steps in the "
              "spec still caps it)")  # fmt: skip
@click.option("-o", "--out", "out_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--as", "principal", default=None, metavar="PRINCIPAL",
              help="who runs this, checked against grants (default: $FMC_PRINCIPAL)")  # fmt: skip
@click.option("--require-verified", is_flag=True,
              help="refuse a principal that is only asserted")  # fmt: skip
@click.option("--allow-data", "allowed_data", multiple=True, type=click.Path(), metavar="DIR",
              help="a folder outside the project that sources may read (repeatable)")  # fmt: skip
@click.option("--force", is_flag=True, help="train again even when this rebase is registered")
@click.option("--wait", is_flag=True, help="wait for another run of the same build folder")
@click.option("--format", "fmt", type=click.Choice(["rich", "short", "json"]), default="rich")
def rebase(file: str, model: str, onto: str, epochs: int, out_dir: str | None,
           principal: str | None, require_verified: bool, allowed_data: tuple[str, ...],
           force: bool, wait: bool, fmt: str) -> None:  # fmt: skip
    """Re-target MODEL's trained adapter onto the base NEW: start from its weights (warm
    start) and train EPOCHS passes on the new base; registered as MODEL's next version with
    `rebased_from` in its lineage. The base must have the same modules and shapes."""
    from fmlang.api import check_paths, compile_spec
    from fmlang.atomic import private_files
    from fmlang.backends import stopping
    from fmlang.backends.data.identity import establish
    from fmlang.backends.rebase import rebase as rebase_model
    from fmlang.backends.run import RunOptions, context
    from fmlang.backends.run_lock import exclusive
    from fmlang.cli.console import console as make_console
    from fmlang.cli.main import report
    from fmlang.cli.run_cmd import _build_if_stale, _quiet_libraries, render_stage_error
    from fmlang.errors import StageError

    spec_path = Path(file)
    result = check_paths([spec_path], verify=True, allowed_data=allowed_data, data=True)
    if not result.ok:
        sys.exit(report(result, fmt, quiet_ok=True))
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec_path.stem
    console = make_console(stderr=True, quiet=fmt == "json")
    options = RunOptions(target, spec_path, "train", establish(principal, require_verified),
                         force, lambda line: console.print(line),
                         allowed_data=tuple(Path(d) for d in allowed_data))  # fmt: skip
    text = "".join(s.text for s in result.program.files.values())
    _quiet_libraries()
    started = time.perf_counter()
    try:
        with exclusive(target, wait), stopping.requests():
            _build_if_stale(result, target, options.log)
            with redirect_stdout(sys.stderr), private_files():
                ctx = context(compile_spec(result), options, text)
                console.print(f"[bold]rebase:{model}[/] onto {onto}")
                knobs = dict(result.report.knobs) if result.report else {}
                done = rebase_model(ctx, model, onto, epochs, knobs=knobs)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, fmt))
    except stopping.Interrupted as stop:
        console.print(f"[yellow]stopped[/]: {stop}; run the same command again to resume")
        sys.exit(stop.exit_code)
    elapsed = time.perf_counter() - started
    if fmt == "json":
        click.echo(json.dumps(_summary(done, onto, elapsed), indent=2, sort_keys=True))
    else:
        console.print(_line(done, onto, elapsed))
    result.program.sink.extend(ctx.diagnostics)
    sys.exit(report(result, "short" if fmt == "json" else fmt, quiet_ok=True))


def _summary(done: Rebased, onto: str, elapsed: float) -> dict[str, object]:
    return {
        "model": done.version.name,
        "onto": onto,
        "version": {"hash": done.version.hash, "ref": done.version.ref},
        "rebased_from": {"hash": done.previous.hash, "ref": done.previous.ref},
        "skipped": done.skipped,
        "steps": done.steps,
        "train_s": done.wall_s,
        "elapsed_s": round(elapsed, 3),
        "original": done.original,
        "metrics": done.metrics.get("scalars") or _scalars(done),
    }


def _scalars(done: Rebased) -> dict[str, float]:
    from fmlang.backends.model_stage import flat_metrics

    return flat_metrics(done.metrics)


def _line(done: Rebased, onto: str, elapsed: float) -> str:
    """One line: the version made, from which, and its time beside the original's."""
    head = f"{done.version.ref} ({done.version.short}) on {onto}, from {done.previous.ref}"
    if done.skipped:
        return f"[green]rebased[/]: {head} (already registered; nothing trained)"
    original = done.original
    versus = (
        f"; the from-scratch training took {original['steps']} steps in {original['wall_s']:.1f} s"
        if original
        else ""
    )
    return (
        f"[green]rebased[/]: {head}: {done.steps} steps in {done.wall_s:.1f} s of training "
        f"({elapsed:.1f} s in all){versus}"
    )
