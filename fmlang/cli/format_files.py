"""`fmc fmt`: format files in place, or report the ones that are not formatted."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from fmlang.atomic import write_text_atomic
from fmlang.check.loader import read_source


def format_paths(paths: list[Path], check_only: bool, show_diff: bool) -> int:
    """0: all formatted (or rewritten); 1: a file does not parse or needs formatting
    under --check; 2: a file cannot be read or written."""
    from fmlang.diagnostics import render
    from fmlang.fmt import format_text

    worst = 0
    for path in paths:
        text, problem = read_source(path, str(path))
        if problem is not None:
            click.echo(render.short(problem), err=True)
            worst = max(worst, 2 if problem.code == "FM0001" else 1)
            continue
        assert text is not None
        result = format_text(text, str(path))
        if result.text is None:
            for diagnostic in result.diagnostics:
                click.echo(render.short(diagnostic), err=True)
            worst = max(worst, 1)
            continue
        if result.text == text:
            continue
        if show_diff:
            click.echo(
                "".join(
                    difflib.unified_diff(
                        text.splitlines(True), result.text.splitlines(True), str(path), str(path)
                    )
                )
            )
        if check_only or show_diff:
            click.echo(f"would reformat {path}", err=True)
            worst = max(worst, 1) if check_only else worst
            continue
        try:
            write_text_atomic(path, result.text)
        except OSError as exc:
            click.echo(f"error[FM0001]: cannot write `{path}`: {exc.strerror or exc}", err=True)
            worst = 2
            continue
        click.echo(f"reformatted {path}", err=True)
    return worst
