"""`fmc`: the command line. Heavy imports happen inside commands, never at start-up."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from fmlang.api import CheckResult
    from fmlang.diagnostics import Diagnostic

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 101
FORMATS = click.Choice(["rich", "short", "json"])


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
ALLOW_DATA = click.option(
    "--allow-data",
    "allowed_data",
    multiple=True,
    type=click.Path(),
    metavar="DIR",
    help="a folder outside the project that sources may read (repeatable; also $FMC_DATA_DIRS)",
)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="fmlang", prog_name="fmc")
def cli() -> None:
    """fmc compiles .fm specs: data, labels, models, constraints and deployments.

    \b
    fmc check spec.fm           report every problem in a spec
    fmc build spec.fm -o out    write the build folder (fm.lock.json, …)
    fmc fmt spec.fm             format specs in place (--check to only verify)
    fmc explain FM0301          describe a diagnostic code
    """


def _exit_code(diagnostics: list[Diagnostic]) -> int:
    from fmlang.diagnostics import Severity
    from fmlang.diagnostics.codes import is_io

    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    if not errors:
        return EXIT_OK
    return EXIT_USAGE if all(is_io(d.code) for d in errors) else EXIT_INPUT


def report(result: CheckResult, fmt: str, quiet_ok: bool = False) -> int:
    from fmlang.diagnostics import render

    diagnostics = result.diagnostics
    if fmt == "json":
        click.echo(render.to_json(diagnostics))
    elif fmt == "short":
        for d in diagnostics:
            click.echo(render.short(d), err=True)
    elif not diagnostics:
        if not quiet_ok:  # a clean run needs no rich console (and its import time)
            click.secho(render.summary(diagnostics), fg="green", bold=True, err=True)
    else:
        from fmlang.cli.console import console as make_console

        console = make_console(stderr=True)
        render.render_rich(diagnostics, result.sources, console)
        style = "bold red" if not result.ok else "bold yellow"
        console.print(f"[{style}]{render.summary(diagnostics)}[/]")
    return _exit_code(diagnostics)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="rich",
    show_default=True,
    help="rich excerpts, one line per problem, or JSON on stdout",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="prove or refute the constraints with Z3 once the spec checks clean",
)
@ALLOW_DATA
def check(files: tuple[str, ...], fmt: str, verify: bool, allowed_data: tuple[str, ...]) -> None:
    """Parse and check FILES, then verify their constraints with Z3; report every problem."""
    from pathlib import Path

    from fmlang.api import check_paths

    paths = [Path(f) for f in files]
    result = check_paths(paths, verify=verify, allowed_data=allowed_data, data=True)
    sys.exit(report(result, fmt))


@cli.command()
@click.argument("file", type=click.Path())
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(),
    default=None,
    help="build folder (default: .fm-build/<spec name>)",
)
@click.option("--format", "fmt", type=FORMATS, default="rich", show_default=True)
@ALLOW_DATA
def build(file: str, out_dir: str | None, fmt: str, allowed_data: tuple[str, ...]) -> None:
    """Check FILE and write its artifacts (fm.lock.json, …) into the build folder."""
    from pathlib import Path

    from fmlang.api import build as build_artifacts
    from fmlang.api import check_paths

    spec = Path(file)
    result = check_paths([spec], verify=True, allowed_data=allowed_data)
    code = report(result, fmt, quiet_ok=True)
    if code != EXIT_OK:
        sys.exit(code)
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec.stem
    from fmlang.errors import StageError

    try:
        written = build_artifacts(result, target)
    except StageError as exc:
        from fmlang.cli.run_cmd import render_stage_error

        sys.exit(render_stage_error(result, exc, fmt))
    except OSError as exc:
        _fail_io(f"cannot write the build folder `{target}`: {exc.strerror or exc}")
    if fmt != "json":
        for path in written:
            click.echo(f"wrote {path}", err=True)
    sys.exit(EXIT_OK)


@cli.command()
@click.argument("file", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rich", "json"]),
    default="rich",
    show_default=True,
    help="a table on the terminal, or JSON on stdout",
)
@ALLOW_DATA
def plan(file: str, fmt: str, allowed_data: tuple[str, ...]) -> None:
    """Show what FILE would run: stages, chosen knobs, estimates, binding constraints."""
    from pathlib import Path

    from fmlang.api import check_paths
    from fmlang.cli.plan import print_plan

    result = check_paths([Path(file)], verify=True, allowed_data=allowed_data)
    code = report(result, "short" if fmt == "json" else "rich", quiet_ok=True)
    if result.report is not None:
        print_plan(result.report, fmt)
    sys.exit(code)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="only report files that are not formatted; change nothing",
)
@click.option("--diff", is_flag=True, help="print a diff instead of writing")
def fmt(files: tuple[str, ...], check_only: bool, diff: bool) -> None:
    """Format .fm FILES canonically, keeping comments (idempotent)."""
    from pathlib import Path

    from fmlang.cli.format_files import format_paths

    sys.exit(format_paths([Path(f) for f in files], check_only=check_only, show_diff=diff))


@cli.command()
@click.option("--stdio", is_flag=True, help="talk over stdin/stdout (the default and only way)")
def lsp(stdio: bool) -> None:
    """Run the language server for editors (LSP over stdin/stdout)."""
    try:
        from fmlang.lsp.server import main as serve
    except ImportError as exc:
        click.echo(
            f"error: `fmc lsp` needs the language-server packages ({exc.name} is missing)\n"
            "  = help: pip install 'fmlang[lsp]'",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    serve()


def _complete_code(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of `fmc explain FM06<TAB>`: the registered codes with that prefix."""
    from click.shell_completion import CompletionItem

    from fmlang.diagnostics.codes import CODES

    prefix = incomplete.upper()
    return [
        CompletionItem(key, help=entry.title)
        for key, entry in sorted(CODES.items())
        if key.startswith(prefix)
    ]


@cli.command()
@click.argument("code", shell_complete=_complete_code)
def explain(code: str) -> None:
    """Describe diagnostic CODE (for example FM0301) at length."""
    from fmlang.diagnostics.codes import CODES

    key = code.upper()
    if not key.startswith("FM"):
        key = "FM" + key.zfill(4)
    entry = CODES.get(key)
    if entry is None:
        from fmlang.suggest import closest

        near = closest(key, CODES)
        click.echo(
            f"error: unknown diagnostic code `{code}`"
            + (f"; did you mean `{near}`?" if near else ""),
            err=True,
        )
        sys.exit(EXIT_USAGE)
    click.echo(f"{key}: {entry.title}\n\n{entry.explanation}")


def _register_stage_commands() -> None:
    from fmlang.cli.audit_cmd import audit
    from fmlang.cli.data_cmd import data
    from fmlang.cli.init_cmd import init
    from fmlang.cli.label_cmd import label
    from fmlang.cli.rebase_cmd import rebase
    from fmlang.cli.registry import diff_command, log_command, rollback_command, tag_command
    from fmlang.cli.run_cmd import run
    from fmlang.cli.serve_cmd import serve

    cli.add_command(init)
    cli.add_command(run)
    cli.add_command(serve)
    cli.add_command(audit)
    cli.add_command(label)
    cli.add_command(data)
    cli.add_command(log_command)
    cli.add_command(diff_command)
    cli.add_command(tag_command)
    cli.add_command(rollback_command)
    cli.add_command(rebase)


_register_stage_commands()


def _fail_io(message: str) -> NoReturn:
    click.echo(f"error[FM0001]: {message}", err=True)
    sys.exit(EXIT_USAGE)


def render_help() -> str:
    """The top-level help as click renders it at 80 columns (cached in help_text.py)."""
    context = click.Context(
        cli,
        info_name="fmc",
        terminal_width=80,
        max_content_width=80,
        help_option_names=CONTEXT_SETTINGS["help_option_names"],
    )
    return cli.get_help(context) + "\n"


def write_help_text(path: str) -> None:
    body = render_help().replace("\\", "\\\\")
    doc = '"""Cached `fmc --help` (see entry.py); regenerate with `make help-text`."""'
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f'{doc}\n\nHELP = """\\\n{body}"""\n')


def main() -> None:
    """Entry point: any exception escaping a command is an internal error (exit 101)."""
    try:
        cli.main(prog_name="fmc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        if os.environ.get("FMC_DEBUG"):
            raise
        click.echo(
            f"error[FM0901]: internal compiler error: {type(exc).__name__}: {exc}\n"
            "  = help: this is a bug in fmc; rerun with FMC_DEBUG=1 for the traceback "
            "and report it with the spec",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
