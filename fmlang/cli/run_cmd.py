"""`fmc run`. Heavy imports (DuckDB, torch) happen inside."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
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
@click.option("--format", "fmt", type=click.Choice(["rich", "short", "json"]), default="rich")
def run(file: str, until: str, out_dir: str | None, principal: str | None,
        require_verified: bool, allowed_data: tuple[str, ...], engine: str, force: bool,
        wait: bool, fmt: str) -> None:  # fmt: skip
    """Run FILE's stages (data, labels, …) into the build folder, skipping unchanged ones.

    The build folder is what runs: it is rebuilt first only when stale (the spec, its data or
    fmc changed). One run per build folder at a time. SIGINT or SIGTERM stops at the next
    safe point (between stages, or after a training step with a checkpoint); run the same
    command again to resume. What the stages write (run/, registry/, the audit log) is
    readable by its owner alone."""
    from rich.console import Console

    from fmlang.api import check_paths, compile_spec
    from fmlang.atomic import make_private, private_files, write_json_atomic
    from fmlang.backends import stopping
    from fmlang.backends.data.identity import establish
    from fmlang.backends.run import RunOptions
    from fmlang.backends.run import run as run_stages
    from fmlang.backends.run_lock import exclusive
    from fmlang.cli.main import report
    from fmlang.errors import StageError

    spec_path = Path(file)
    result = check_paths([spec_path], verify=True, allowed_data=allowed_data, data=True)
    if not result.ok:  # otherwise everything is reported once, at the end
        sys.exit(report(result, fmt, quiet_ok=True))
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec_path.stem
    console = Console(stderr=True, highlight=False, quiet=fmt == "json")
    options = RunOptions(target, spec_path, until, establish(principal, require_verified),
                         force, lambda line: console.print(line),
                         allowed_data=tuple(Path(d) for d in allowed_data),
                         engine=engine)  # fmt: skip
    text = "".join(s.text for s in result.program.files.values())
    from rich.progress import Progress

    _quiet_libraries()

    try:
        with exclusive(target, wait), stopping.requests():
            _build_if_stale(result, target, options.log)
            for folder in PRIVATE_FOLDERS:  # made by an earlier fmc; new ones are 0700
                make_private(target / folder)
            # Libraries print progress to stdout; stdout is for --format json only.
            with (
                Progress(console=console, transient=True) as progress,
                redirect_stdout(sys.stderr),
                private_files(),
            ):
                options.progress = progress
                knobs = dict(result.report.knobs) if result.report else {}
                outcome, ctx = run_stages(compile_spec(result), options, text, knobs)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, fmt))
    except stopping.Interrupted as stop:
        console.print(f"[yellow]stopped[/]: {stop}; run the same command again to resume")
        sys.exit(stop.exit_code)
    write_json_atomic(target / "run" / "report.json", outcome.to_json())
    result.program.sink.extend(ctx.diagnostics)
    sys.exit(report(result, fmt, quiet_ok=True))


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
