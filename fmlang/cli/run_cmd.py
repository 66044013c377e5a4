"""`fmc run`. Heavy imports (DuckDB, torch) happen inside."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from fmlang.api import CheckResult
    from fmlang.errors import StageError

UNTIL = ("data", "labels", "train", "merge")
PRIVATE_FOLDERS = ("run", "registry")  # what the stages derive from the data


def render_stage_error(result: CheckResult, exc: StageError, fmt: str) -> int:
    """Show a stage's diagnostics like the checker's; the exit code they call for."""
    from fmlang.cli.main import report

    result.program.sink.extend(exc.diagnostics)
    return report(result, fmt)


@click.command()
@click.argument("file", type=click.Path())
@click.option("--until", type=click.Choice(UNTIL), default=UNTIL[-1], show_default=True,
              help="the last stage to run")  # fmt: skip
@click.option("-o", "--out", "out_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--as", "principal", default=None, metavar="PRINCIPAL",
              help="who runs this, checked against grants (default: $FMC_PRINCIPAL); `os` "
              "for your OS account, verified as user:LOGIN")  # fmt: skip
@click.option("--require-verified", is_flag=True,
              help="refuse a principal that is only asserted (also "
              "$FMC_REQUIRE_VERIFIED_PRINCIPAL=1): --as os or $FMC_PRINCIPAL_TOKEN")  # fmt: skip
@click.option("--allow-data", "allowed_data", multiple=True, type=click.Path(), metavar="DIR",
              help="a folder outside the project that sources may read (repeatable; also "
              "$FMC_DATA_DIRS)")  # fmt: skip
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb",
              show_default=True, help="where the data and labels stages run: embedded DuckDB, "
              "or a local Spark session (pip install 'fmlang[spark]'; Java 17+)")  # fmt: skip
@click.option(
    "--force",
    is_flag=True,
    help="rerun every stage from scratch, even when its inputs are unchanged",
)
@click.option(
    "--wait", is_flag=True, help="wait for another run of the same build folder instead of refusing"
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="say which stages would run and why (which input, rule or setting changed), from "
    "their cache keys; run nothing",
)
@click.option("--format", "fmt", type=click.Choice(["rich", "short", "json"]), default="rich",
              help="the run's summary and problems for people, one line per problem, or "
              "the summary as JSON on stdout")  # fmt: skip
def run(file: str, until: str, out_dir: str | None, principal: str | None,
        require_verified: bool, allowed_data: tuple[str, ...], engine: str, force: bool,
        wait: bool, dry_run: bool, fmt: str) -> None:  # fmt: skip
    """Run FILE's stages (data, labels, …) into the build folder, skipping unchanged ones.

    The build folder is what runs: it is rebuilt first only when stale (the spec, its data or
    fmc changed). One run per build folder at a time. SIGINT or SIGTERM stops at the next
    safe point (between stages, or after a training step with a checkpoint); run the same
    command again to resume. What the stages write (run/, registry/, the audit log) is
    readable by its owner alone. Each stage's library output (progress bars, warnings) goes
    to its log under run/logs/; the run ends with a summary (`--format json`: as JSON)."""
    from fmlang.api import check_paths, compile_spec
    from fmlang.atomic import make_private, private_files, write_json_atomic
    from fmlang.backends import stopping
    from fmlang.backends.data.identity import establish
    from fmlang.backends.report import write_run_report
    from fmlang.backends.run import RunOptions
    from fmlang.backends.run import run as run_stages
    from fmlang.backends.run_lock import exclusive
    from fmlang.backends.run_summary import summary
    from fmlang.backends.stage_output import can_capture_descriptors
    from fmlang.cli.console import is_terminal
    from fmlang.cli.main import report
    from fmlang.cli.run_display import StageDisplay
    from fmlang.errors import StageError

    spec_path = Path(file)
    result = check_paths([spec_path], verify=True, allowed_data=allowed_data, data=True)
    if not result.ok:  # otherwise everything is reported once, at the end
        sys.exit(report(result, fmt, quiet_ok=True))
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec_path.stem
    descriptors = can_capture_descriptors() and not dry_run
    console = _console(fmt, descriptors)
    say: Callable[[str], None] = (lambda _: None) if dry_run else console.print
    options = RunOptions(target, spec_path, until, establish(principal, require_verified),
                         force, say, allowed_data=tuple(Path(d) for d in allowed_data),
                         engine=engine, dry_run=dry_run, capture=not dry_run,
                         descriptors=descriptors)  # fmt: skip
    if not dry_run:
        options.progress = StageDisplay(console, live=is_terminal(console.file))
    text = "".join(s.text for s in result.program.files.values())
    _quiet_libraries()
    started = time.perf_counter()
    try:
        with exclusive(target, wait), stopping.requests():
            _build_if_stale(result, target, console.print)
            for folder in PRIVATE_FOLDERS:  # made by an earlier fmc; new ones are 0700
                make_private(target / folder)
            # Libraries print progress to stdout; stdout is for --format json only.
            with redirect_stdout(sys.stderr), private_files():
                knobs = dict(result.report.knobs) if result.report else {}
                outcome, ctx = run_stages(compile_spec(result), options, text, knobs)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, fmt))
    except stopping.Interrupted as stop:
        console.print(f"[yellow]stopped[/]: {stop}; run the same command again to resume")
        sys.exit(stop.exit_code)
    if not dry_run:
        write_json_atomic(target / "run" / "report.json", outcome.to_json())
        result.program.sink.extend(ctx.diagnostics)
        result.program.sink.extend(write_run_report(target))  # run/report.html, its pictures
    sys.exit(_finish(result, summary(outcome, target, time.perf_counter() - started, dry_run),
                     fmt, console))  # fmt: skip


def _console(fmt: str, descriptors: bool) -> Console:
    """The run's console on stderr; with `descriptors` (fds 1 and 2 go to each stage's log
    while it runs) on a copy of fd 2 made now, so it still reaches the screen."""
    from fmlang.cli.console import console

    stream = None
    if descriptors:
        sys.stderr.flush()
        stream = os.fdopen(os.dup(2), "w", encoding=sys.stderr.encoding, buffering=1)
    return console(stderr=True, quiet=fmt == "json", stream=stream)


def _finish(result: CheckResult, document: dict[str, Any], fmt: str, console: Console) -> int:
    """Print the summary (JSON on stdout, with the diagnostics) and the problems; the exit
    code they call for."""
    from fmlang.cli.main import _exit_code, report
    from fmlang.cli.run_display import print_summary
    from fmlang.diagnostics import render

    if fmt == "json":
        diagnostics = json.loads(render.to_json(result.diagnostics))
        click.echo(json.dumps(document | diagnostics, indent=2))
        return _exit_code(result.diagnostics)
    print_summary(console, document)
    return report(result, fmt, quiet_ok=True)


def _build_if_stale(result: CheckResult, target: Path, log: Callable[[str], None]) -> None:
    """Rebuild the folder when the spec, its inputs or fmc changed; otherwise run it as it
    is, saying which artifacts were edited by hand since `fmc build`."""
    from fmlang.api import build, edited_artifacts

    if build(result, target, only_if_stale=True):
        log(f"[dim]built {target}[/]")
        return
    for relative in edited_artifacts(target):
        log(f"[yellow]note[/]: `{relative}` was edited after `fmc build`; running it as edited")


def _quiet_libraries() -> None:
    """Deprecation chatter from torch/transformers/peft is not the user's business; the
    peft note that a pip or local base was renamed to its folder is expected."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # load reports of expected heads
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*was renamed.*")
